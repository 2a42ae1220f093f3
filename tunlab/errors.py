"""Typed errors: every message says what went wrong and what to do about it."""

from __future__ import annotations

import errno as _errno
import os


class TunlabError(Exception):
    """Base class of every error tunlab raises on purpose."""


class DeviceError(TunlabError, OSError):
    """A TUN/TAP device could not be created, configured or used."""

    def __init__(self, message: str, err: int = _errno.EIO) -> None:
        OSError.__init__(self, err, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DevicePermissionError(DeviceError, PermissionError):
    """The operation needs a privilege (CAP_NET_ADMIN) this process lacks."""

    def __init__(self, message: str) -> None:
        super().__init__(message, _errno.EPERM)


class TunUnavailableError(DeviceError, FileNotFoundError):
    """The platform's TUN/TAP driver is missing."""

    def __init__(self, message: str) -> None:
        super().__init__(message, _errno.ENOENT)


class InterfaceExistsError(DeviceError, FileExistsError):
    """An interface of that name already exists and cannot be attached to."""

    def __init__(self, message: str) -> None:
        super().__init__(message, _errno.EEXIST)


class RingFullError(DeviceError, BlockingIOError):
    """A device's send ring or queue has no room now (Wintun): retry later, or make it larger."""

    def __init__(self, message: str) -> None:
        super().__init__(message, _errno.EAGAIN)


class InterfaceNotFoundError(DeviceError, FileNotFoundError):
    """The interface behind a device is gone (removed or closed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, _errno.ENODEV)


class NamespaceNotFoundError(DeviceError, FileNotFoundError):
    """A network namespace named by the caller does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message, _errno.ENOENT)


class OffloadUnavailableError(DeviceError):
    """The kernel refused the requested offload features."""

    def __init__(self, message: str, err: int = _errno.EOPNOTSUPP) -> None:
        super().__init__(message, err)


class UnsupportedOperationError(DeviceError):
    """The operation does not exist on this platform or for this kind of device."""

    def __init__(self, message: str) -> None:
        super().__init__(message, _errno.EOPNOTSUPP)


class DeviceClosedError(DeviceError):
    """The device was closed (possibly while another task was waiting on it)."""

    def __init__(self, message: str = "the device is closed") -> None:
        super().__init__(message, _errno.EBADF)


class SendMultipleError(DeviceError):
    """Some frames of a send_multiple batch were refused; the others were written."""

    def __init__(self, written: int, errors: list[OSError]) -> None:
        first = errors[0]
        super().__init__(
            f"{len(errors)} frame(s) of the batch were refused ({first.strerror or first}); "
            f"{written} bytes were written",
            first.errno or 0,
        )
        self.written = written
        self.errors = errors


class LabError(TunlabError):
    """A lab could not be validated, brought up, used or torn down."""


class TopologyError(LabError, ValueError):
    """A topology file or model is invalid; the message names the field path."""


class LabStopped(LabError):
    """The lab was taken down from outside (`tunlab down` in another process) while this
    program held it; its `with` block and `finally:` still run, and down() is a no-op."""


class DeployError(LabError, RuntimeError):
    """A deploy step failed; everything already made was rolled back."""

    def __init__(self, step: str, cause: BaseException, field: str | None = None) -> None:
        where = f" ({field})" if field else ""
        self.reason = _cause_text(cause)  # the cause in words, as the message says it
        super().__init__(f"deploy failed at step '{step}'{where}: {self.reason}")
        self.step = step
        self.cause = cause
        self.field = field


def _cause_text(cause: BaseException) -> str:
    """A kernel error as words, never a bare errno tuple: pyroute2's NetlinkError prints as
    "(17, 'File exists')" and an OSError without a message as "[Errno 17] ..."."""
    code = getattr(cause, "code", None)
    if isinstance(cause, OSError) and cause.strerror:
        code = cause.errno
        text = cause.strerror + (f": {cause.filename}" if cause.filename else "")
    elif isinstance(code, int) and code > 0 and str(cause).startswith("("):
        text = os.strerror(code)
    else:
        return str(cause) or type(cause).__name__
    advice = {
        _errno.EEXIST: "something of that name already exists where the step makes it",
        _errno.EPERM: "run as root (or with CAP_NET_ADMIN)",
        _errno.EACCES: "run as root (or with CAP_NET_ADMIN)",
    }.get(code or 0)
    return f"{text} ({_errno.errorcode.get(code or 0, code)}" + (f": {advice})" if advice else ")")


__all__ = [
    "DeployError",
    "DeviceClosedError",
    "DeviceError",
    "DevicePermissionError",
    "InterfaceExistsError",
    "InterfaceNotFoundError",
    "LabError",
    "LabStopped",
    "NamespaceNotFoundError",
    "OffloadUnavailableError",
    "RingFullError",
    "SendMultipleError",
    "TopologyError",
    "TunUnavailableError",
    "TunlabError",
    "UnsupportedOperationError",
]
