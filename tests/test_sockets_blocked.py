import socket

import pytest
from pytest_socket import SocketBlockedError


def test_outbound_socket_is_blocked():
    with pytest.raises(SocketBlockedError):
        socket.create_connection(("127.0.0.1", 9), timeout=0.1)


def test_hub_call_fails_fast_offline():
    from neurodecode._core.errors import OfflineError
    from neurodecode.io import resolve_model_dir

    with pytest.raises(OfflineError, match="offline mode is on.*neurodecode download"):
        resolve_model_dir("someone/not-cached-model")
