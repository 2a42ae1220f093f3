"""Linux kernel helpers shared by the device backend and the labs: namespaces, netlink, ethtool."""
