"""Single-row statements as SQL built once per table and column set: the projection's writes,
and the registry's read of one row by a unique field (`select_one`).

Every committed batch is projected on every replica, so these statements run for every write
several times over. Building the query through the ORM cost more than running it (one policy
UPDATE on the development machine: about 400 µs through `QuerySet.update`, 110 µs here). Here
the statement text is cached and only the values are prepared per call, the way the ORM
prepares them (`pre_save`, `get_db_prep_save`), so rows read back through the ORM exactly as
if it had written them.

The statements run on the driver's own cursor, in its own placeholder style, inside the ORM's
transaction: Django's cursor wrapper (error translation, query logging, execute wrappers, and
SQLite's rewriting of each query's placeholders) cost more than the statement itself (the
projection's claim UPDATE on SQLite: 7.5 µs on the driver's cursor, 17.1 µs through Django's).
So these writes are not in `connection.queries`, and a failure raises the driver's exception;
the projector retries on any.

Deletes stay in the ORM: Django emulates `on_delete` for the rows that refer to the deleted one.

`select_one` runs on Django's cursor (it is a read, so it stays in `connection.queries` and
Django's error translation), and converts what it reads as the ORM does: a writer reads the
row it changes before every registry write, and `QuerySet.get` spent about 480 µs of a 580 µs
read building and compiling the query (a policy by name on SQLite, this machine, 2026-11-27).
"""

from __future__ import annotations

import weakref
from functools import cache
from typing import Any, TypeVar

from django.db import connections, models

from meshcore.writeguard import require_projecting

Fields = tuple[models.Field, ...]
ModelT = TypeVar("ModelT", bound=models.Model)


def insert(instance: models.Model, using: str = "default") -> None:
    """INSERT the instance's row; an instance without a primary key gets the one the database assigns."""
    _guard(type(instance), "rows.insert()")
    connection = connections[using]
    meta = instance._meta
    assign_pk = instance.pk is None
    fields = tuple(f for f in meta.concrete_fields if not (f.primary_key and assign_pk))
    returning = assign_pk and connection.features.can_return_columns_from_insert
    params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    sql = _insert_sql(connection.vendor, meta.db_table, fields, meta.pk.column if returning else None)
    cursor = _driver_cursor(connection)
    try:
        cursor.execute(sql, params)
        if returning:
            instance.pk = cursor.fetchone()[0]
        elif assign_pk:
            instance.pk = connection.ops.last_insert_id(cursor, meta.db_table, meta.pk.column)
    finally:
        cursor.close()
    instance._state.adding = False
    instance._state.db = using


def update(model: type[models.Model], pk: Any, values: dict[str, Any], using: str = "default") -> int:
    """UPDATE the named fields of one row (values as the model holds them); return the rows changed."""
    return update_where(model, values, {model._meta.pk.name: pk}, using=using)


def update_where(
    model: type[models.Model],
    values: dict[str, Any],
    where: dict[str, Any],
    *,
    below: dict[str, Any] | None = None,
    using: str = "default",
) -> int:
    """UPDATE ... WHERE each `where` field equals its value and each `below` field is less than its value."""
    _guard(model, "rows.update()")
    if not values:
        return 0  # nothing of this row is a column here (a user's groups are another table)
    connection = connections[using]
    meta = model._meta
    assignments = _fields(model, values)
    equal, less = _fields(model, where), _fields(model, below or {})
    params = [field.get_db_prep_save(values[name], connection) for name, field in assignments]
    params += [field.get_db_prep_value(where[name], connection) for name, field in equal]
    params += [field.get_db_prep_value(below[name], connection) for name, field in less]  # type: ignore[index]
    sql = _update_sql(
        connection.vendor,
        meta.db_table,
        tuple(field.column for _, field in assignments),
        tuple(field.column for _, field in equal),
        tuple(field.column for _, field in less),
    )
    cursor = _driver_cursor(connection)
    try:
        cursor.execute(sql, params)
        return cursor.rowcount
    finally:
        cursor.close()


def select_one(model: type[ModelT], using: str = "default", **lookup: Any) -> ModelT | None:
    """The row whose fields equal `lookup` (a unique field or the primary key, `pk`), as `model`; None if none."""
    connection = connections[using]
    meta = model._meta
    where = {meta.pk.name if name == "pk" else name: value for name, value in lookup.items()}
    equal = _fields(model, where)
    params = [field.get_db_prep_value(where[name], connection) for name, field in equal]
    columns = tuple(field.column for field in meta.concrete_fields)
    sql = _select_sql(connection.vendor, meta.db_table, columns, tuple(field.column for _, field in equal))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for index, column, converters in _converters(connection, model):
        for convert in converters:
            values[index] = convert(values[index], column, connection)
    return model.from_db(using, [field.attname for field in meta.concrete_fields], values)


# Per connection (a thread's own), the converters the ORM would apply to each column it reads.
_converters_of: weakref.WeakKeyDictionary[Any, dict[type[models.Model], list[tuple[int, Any, list]]]] = (
    weakref.WeakKeyDictionary()
)


def _converters(connection: Any, model: type[models.Model]) -> list[tuple[int, Any, list]]:
    by_model = _converters_of.setdefault(connection, {})
    if model not in by_model:
        found = []
        for index, field in enumerate(model._meta.concrete_fields):
            column = field.get_col(model._meta.db_table)
            converters = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
            if converters:
                found.append((index, column, converters))
        by_model[model] = found
    return by_model[model]


def _driver_cursor(connection: Any) -> Any:
    connection.ensure_connection()
    return connection.connection.cursor()


def _guard(model: type[models.Model], action: str) -> None:
    # These statements skip the models' own guards: a replicated table still takes them only from the projection.
    if hasattr(model, "OBSERVED_FIELDS"):
        require_projecting(model, action)


def _fields(model: type[models.Model], values: dict[str, Any]) -> list[tuple[str, models.Field]]:
    # Sorted: the same column set always makes the same (cached) statement.
    return [(name, model._meta.get_field(name)) for name in sorted(values)]


def _placeholder(vendor: str) -> str:
    # The drivers' own styles: sqlite3 takes qmark, psycopg takes format.
    return "?" if vendor == "sqlite" else "%s"


def _quote(vendor: str, name: str) -> str:
    # SQLite and PostgreSQL, the two databases infermesh runs on, both quote with double quotes.
    if vendor not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"the projection writes SQL for SQLite and PostgreSQL, not {vendor}")
    return '"' + name.replace('"', '""') + '"'


@cache
def _insert_sql(vendor: str, table: str, fields: Fields, returning: str | None) -> str:
    columns = ", ".join(_quote(vendor, field.column) for field in fields)
    placeholders = ", ".join([_placeholder(vendor)] * len(fields))
    tail = f" RETURNING {_quote(vendor, returning)}" if returning else ""
    # Names come from the models' metadata, values only ever as parameters.
    return f"INSERT INTO {_quote(vendor, table)} ({columns}) VALUES ({placeholders}){tail}"  # noqa: S608


@cache
def _update_sql(
    vendor: str, table: str, columns: tuple[str, ...], equal: tuple[str, ...], less: tuple[str, ...]
) -> str:
    mark = _placeholder(vendor)
    assignments = ", ".join(f"{_quote(vendor, column)} = {mark}" for column in columns)
    conditions = [f"{_quote(vendor, column)} = {mark}" for column in equal]
    conditions += [f"{_quote(vendor, column)} < {mark}" for column in less]
    return f"UPDATE {_quote(vendor, table)} SET {assignments} WHERE {' AND '.join(conditions)}"  # noqa: S608


@cache
def _select_sql(vendor: str, table: str, columns: tuple[str, ...], equal: tuple[str, ...]) -> str:
    # Django's cursor takes its own placeholder style, %s, on every backend.
    selected = ", ".join(_quote(vendor, column) for column in columns)
    conditions = " AND ".join(f"{_quote(vendor, column)} = %s" for column in equal)
    return f"SELECT {selected} FROM {_quote(vendor, table)} WHERE {conditions}"  # noqa: S608
