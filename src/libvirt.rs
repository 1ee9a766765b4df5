//! The libvirt adapter: the only module that names `virt::`. Every libvirt error is mapped
//! to the crate's `Error` here, once.

/// Stop libvirt from printing errors on its own; we report them.
pub fn init() {
    virt::error::clear_error_callback();
}
