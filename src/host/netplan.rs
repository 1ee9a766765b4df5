//! netplan: render vbridge's own YAML, validate it with `netplan generate` on a staged copy,
//! write it (0600, backing up what it replaces).
