"""Reliability and security tests (issue 14): hostile inputs the tests make themselves."""
