"""Reports: report.json (everything), report.md (PR comment), report.html (with plots)."""
