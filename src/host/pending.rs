//! Commit-confirm: a change applied with a confirm window is written to a state file with
//! its undo steps; a detached reverter undoes it when the window ends unless `--confirm`
//! removed the file first.
