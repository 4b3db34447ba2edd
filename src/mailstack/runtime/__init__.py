"""Everything that touches disk and processes: preparing files, supervising daemons."""
