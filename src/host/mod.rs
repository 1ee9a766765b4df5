//! Host networking: sysfs reads, netlink writes, netplan rendering, TAP devices.
