"""Layer 7: what a user reads and takes away. The front as rows (computed once), tables, the HTML
report, drawings, exports and the generated reference; every file written whole."""
