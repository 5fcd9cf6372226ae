//! Placeholder: the openMSX control-connection driver, being written.
