//! Commands that need no manager: against a running engine (`--engine ADDR`: `ls`,
//! `info`, snapshots, expand, frontend, salvage, replica add/rm) and on backup targets
//! directly (`backup …`), and clones of a running replica's snapshot (`clone`).

pub mod backup;
pub mod clone;
pub mod engine_info;
pub mod engine_ops;
