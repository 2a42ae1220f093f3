"""Linux backend: /dev/net/tun ioctls for the fd, netlink (pyroute2) for the interface."""
