"""Tests of the app and its parts against real databases and real servers in this process
(Radicale, Xandikos, SMTP and HTTP servers started by fixtures)."""
