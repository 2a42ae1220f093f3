"""ioctl request numbers as <sys/ioccom.h> builds them (BSD family; Linux's sense is reversed).

_IOC(inout, group, num, len) = inout | (len & 0x1fff) << 16 | group << 8 | num; the argument's
size is part of the number, so an OS with a bigger struct (NetBSD's ifreq) has other numbers.
"""

from __future__ import annotations

IOCPARM_MASK = 0x1FFF
IOC_VOID = 0x20000000
IOC_OUT = 0x40000000  # the kernel writes the argument back (_IOR)
IOC_IN = 0x80000000  # the kernel reads the argument (_IOW)
IOC_INOUT = IOC_IN | IOC_OUT


def ioc(inout: int, group: str, num: int, length: int) -> int:
    return inout | ((length & IOCPARM_MASK) << 16) | (ord(group) << 8) | num


def io(group: str, num: int) -> int:
    return ioc(IOC_VOID, group, num, 0)


def ior(group: str, num: int, length: int) -> int:
    return ioc(IOC_OUT, group, num, length)


def iow(group: str, num: int, length: int) -> int:
    return ioc(IOC_IN, group, num, length)


def iowr(group: str, num: int, length: int) -> int:
    return ioc(IOC_INOUT, group, num, length)
