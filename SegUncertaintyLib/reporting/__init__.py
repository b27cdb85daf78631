"""Pages a reviewer reads: a case's report and the triage worklist (self-contained HTML)."""
