"""What macOS, FreeBSD, OpenBSD and NetBSD share: ioctl encoding, sockaddrs, ifreq-style
requests, PF_ROUTE messages, BPF records and getifaddrs — each written once, parameterised by
the OS's ABI (tunlab/devices/_bsd/abi.py), used by the darwin and BSD backends alike."""
