//! Graph builder and runtime. (in progress)
