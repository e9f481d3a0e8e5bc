//! Legacy tar.gz `.expert` packages (read in memory; write for debugging).
