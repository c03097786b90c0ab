"""exmig: move an Exchange certificate from Exchange 2010 to 2007/2010 servers over WinRM."""

__version__ = "0.1.0"
