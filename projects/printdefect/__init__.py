"""Chapter 1: blockwise detection of local print defects (gray / solid spots) on scanned test pages."""
