"""Wine 8 gaps, worked around for tunlab's Windows-CPython test run only (.ci/windows-cpython)."""

import os

if os.environ.get("TUNLAB_WINE"):
    try:
        import trio._core._io_windows as _iow
    except Exception:  # trio not installed
        _iow = None
    if _iow is not None:
        _orig = _iow._get_underlying_socket

        def _get_underlying_socket(sock, *, which=_iow.WSAIoctls.SIO_BASE_HANDLE):
            try:
                return _orig(sock, which=which)
            except OSError as exc:
                if getattr(exc, "winerror", None) != 10045:
                    raise
                # wine 8 answers WSAIoctl(SIO_BASE_HANDLE / SIO_BSP_HANDLE_SELECT) with
                # WSAEOPNOTSUPP: its sockets have no layered providers, the socket is its own base
                if hasattr(sock, "fileno"):
                    sock = sock.fileno()
                return _iow.Handle(_iow.ffi.cast("HANDLE", sock))

        _iow._get_underlying_socket = _get_underlying_socket
