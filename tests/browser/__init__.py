"""Browser tests: headless Chromium reads the real daemon's pages (docs/development.md, "Browser tests")."""
