//! Persistent TAP devices on a bridge (`ip tuntap add ... mode tap` done with ioctls).
