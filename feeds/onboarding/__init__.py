"""Bringing staff in: invitation emails (their text and their sending) and the signed connect
links to the self-service page."""
