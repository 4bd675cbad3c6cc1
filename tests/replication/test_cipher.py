"""The Raft port's cipher: AES-GCM-SIV tokens that only the shared password opens, and PySyncObj's Fernet read too."""

import pytest
from cryptography.fernet import InvalidToken
from pysyncobj.encryptor import getEncryptor

from meshcore.replication.cipher import VERSION, RaftCipher

PASSWORD = "a-shared-raft-password"
MESSAGE = b"\x80\x04pickled append entries" * 4


def test_a_sealed_message_opens_with_its_timestamp_and_is_not_readable_on_the_wire():
    cipher = RaftCipher(PASSWORD)
    token = cipher.encrypt_at_time(MESSAGE, 1234)

    assert token[:1] == VERSION and MESSAGE not in token
    assert RaftCipher(PASSWORD).extract_timestamp(token) == 1234
    assert RaftCipher(PASSWORD).decrypt(token) == MESSAGE
    assert cipher.encrypt_at_time(MESSAGE, 1234) != token  # a fresh nonce every time


def test_the_message_opened_for_its_timestamp_is_the_one_returned_next():
    sender, receiver = RaftCipher(PASSWORD), RaftCipher(PASSWORD)
    first, second = sender.encrypt_at_time(b"first", 1), sender.encrypt_at_time(b"second", 2)

    assert receiver.extract_timestamp(first) == 1
    assert receiver.decrypt(second) == b"second"  # not the message opened before
    assert receiver.decrypt(first) == b"first"


@pytest.mark.parametrize("position", [0, 3, 8, 12, 25, -1])
def test_a_token_changed_anywhere_is_refused(position):
    token = bytearray(RaftCipher(PASSWORD).encrypt_at_time(MESSAGE, 99))
    token[position] ^= 0x01
    receiver = RaftCipher(PASSWORD)

    with pytest.raises(InvalidToken):
        receiver.extract_timestamp(bytes(token))
    with pytest.raises(InvalidToken):
        receiver.decrypt(bytes(token))


def test_another_password_cannot_open_a_token():
    token = RaftCipher(PASSWORD).encrypt_at_time(MESSAGE, 5)

    with pytest.raises(InvalidToken):
        RaftCipher("another-raft-password").extract_timestamp(token)
    with pytest.raises(InvalidToken):
        RaftCipher("another-raft-password").decrypt(token)


@pytest.mark.parametrize("token", [b"", VERSION, VERSION + b"\x00" * 36, b"gAAAAA-not-fernet"])
def test_short_or_malformed_tokens_are_refused(token):
    with pytest.raises(InvalidToken):
        RaftCipher(PASSWORD).decrypt(token)


def test_pysyncobj_fernet_tokens_are_read_and_fernet_is_sent_when_asked():
    pysyncobj_fernet = getEncryptor(PASSWORD)  # as a replica of an earlier release seals its messages
    token = pysyncobj_fernet.encrypt_at_time(MESSAGE, 77)
    receiver = RaftCipher(PASSWORD)
    assert (receiver.extract_timestamp(token), receiver.decrypt(token)) == (77, MESSAGE)

    sent = RaftCipher(PASSWORD, send="fernet").encrypt_at_time(MESSAGE, 78)
    assert (pysyncobj_fernet.extract_timestamp(sent), pysyncobj_fernet.decrypt(sent)) == (78, MESSAGE)


def test_an_unknown_cipher_is_refused():
    with pytest.raises(ValueError, match="aes-gcm-siv, fernet"):
        RaftCipher(PASSWORD, send="rot13")
