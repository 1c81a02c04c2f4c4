"""Job postings: employers write and publish them, everyone searches the published ones."""
