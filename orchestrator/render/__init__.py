"""Printed forms of a plan: PowerShell text (dry-run, WinRS), human text, JSON."""
