"""Transports execute plan commands on a server: PSRP (pypsrp) and WinRS (pywinrm).

No Exchange rules live here: a transport knows sessions, values and errors, nothing about what a
step means.
"""
