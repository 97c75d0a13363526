//! Node configuration. TODO
