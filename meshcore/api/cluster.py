"""`GET /api/v1/cluster/`: this replica's view of the Raft group that holds the desired state."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from meshcore.replication.addresses import raft_address_problem
from meshcore.replication.log import change_membership, current_status
from meshcore.replication.raft import NoQuorum


class ClusterPeerSerializer(serializers.Serializer):
    address = serializers.CharField()
    connected = serializers.BooleanField()
    connected_since = serializers.DateTimeField(required=False, help_text="Present while connected.")
    disconnected_since = serializers.DateTimeField(required=False, help_text="Present while disconnected.")
    match_index = serializers.IntegerField(allow_null=True, help_text="Last log index known to be on the peer.")
    behind = serializers.IntegerField(
        allow_null=True, help_text="Committed entries the peer has yet to receive (known on the leader only)."
    )


class ClusterSerializer(serializers.Serializer):
    self = serializers.CharField(help_text="This replica's Raft address.")
    role = serializers.CharField(help_text="leader, follower, candidate, or stopped.")
    role_since = serializers.DateTimeField(required=False)
    leader = serializers.CharField(allow_null=True)
    leader_since = serializers.DateTimeField(required=False, help_text="When this replica last saw the leader change.")
    term = serializers.IntegerField(allow_null=True)
    commit_index = serializers.IntegerField(allow_null=True)
    last_applied = serializers.IntegerField(allow_null=True)
    has_quorum = serializers.BooleanField()
    peers = ClusterPeerSerializer(many=True)
    state_seq = serializers.IntegerField(help_text="Changes applied to the replicated state.")
    projected_seq = serializers.IntegerField(help_text="Changes applied to this replica's database.")
    digest = serializers.CharField(help_text="SHA-256 of the desired state: equal digests mean equal state.")


class ClusterView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=ClusterSerializer, operation_id="cluster_status")
    def get(self, request: Request) -> Response:
        return Response(current_status())


def _raft_address(value: str) -> None:
    if problem := raft_address_problem(value):
        raise serializers.ValidationError(problem)


class ClusterMemberSerializer(serializers.Serializer):
    address = serializers.CharField(
        max_length=260,
        trim_whitespace=False,
        validators=[_raft_address],
        help_text="The replica's MESH_RAFT_ADDRESS: HOST:PORT (port 1-65535), as in MESH_RAFT_PEERS.",
    )


def _change(change: str, address: str) -> Response:
    try:
        return Response(change_membership(change, address))
    except NoQuorum as error:
        return Response({"detail": str(error)}, status=503, headers={"Retry-After": str(error.retry_after)})
    except ValueError as error:
        return Response({"detail": str(error)}, status=409)


class ClusterMembersView(APIView):
    """Add a replica to the running cluster (start it first with MESH_RAFT_PEERS = every member)."""

    @extend_schema(
        request=ClusterMemberSerializer,
        responses={
            200: ClusterSerializer,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="The address is not HOST:PORT (port 1-65535)."),
            409: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="Already a member, or refused: no live replica with the cluster's password answers at "
                "the address, or the cluster would be left without a reachable quorum. `detail` says what to do.",
            ),
            503: OpenApiResponse(OpenApiTypes.OBJECT, description="No quorum now, or another change is under way."),
        },
        operation_id="cluster_member_add",
    )
    def post(self, request: Request) -> Response:
        member = ClusterMemberSerializer(data=request.data)
        member.is_valid(raise_exception=True)
        return _change("add", member.validated_data["address"])


class ClusterMemberView(APIView):
    """Remove a replica from the cluster, one at a time."""

    @extend_schema(
        responses={
            200: ClusterSerializer,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="The address is not HOST:PORT (port 1-65535)."),
            409: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="Not a member, the leader, or the remaining members could not reach a quorum.",
            ),
            503: OpenApiResponse(OpenApiTypes.OBJECT, description="No quorum now, or another change is under way."),
        },
        operation_id="cluster_member_remove",
    )
    def delete(self, request: Request, address: str) -> Response:
        member = ClusterMemberSerializer(data={"address": address})
        member.is_valid(raise_exception=True)
        return _change("remove", address)
