//! Placeholder: the export tests arrive with the exporters.
