# ===== EX2010.ps1 =====
# exmig plan for EX2010 (Exchange 2010, source)
# Generated from the playbook; exmig sends these as commands with typed parameters.
# Values in <angle brackets> are not known yet; (Get-Credential).Password stands for a secret.

# --- before the first change: what the run reads of this server
Get-ExchangeCertificate -Server 'EX2010'
# in Windows PowerShell on EX2010 (Microsoft.PowerShell at http://ex2010.mitserv.net:5985/wsman), not the Exchange endpoint
Get-ChildItem -Path 'Cert:\LocalMachine\CA','Cert:\LocalMachine\Root'
Get-OwaVirtualDirectory -Server 'EX2010'
Get-WebServicesVirtualDirectory -Server 'EX2010'
Get-ActiveSyncVirtualDirectory -Server 'EX2010'
Get-OabVirtualDirectory -Server 'EX2010'
Get-EcpVirtualDirectory -Server 'EX2010'
Get-ClientAccessServer -Identity 'EX2010'
Get-OutlookAnywhere -Server 'EX2010'
Get-ReceiveConnector -Server 'EX2010'
Get-POPSettings -Server 'EX2010'
Get-IMAPSettings -Server 'EX2010'

# --- request: The key is generated on the source and never leaves it until the PFX export; it must be exportable so the certificate can go to the other servers.
# reads first:
Get-ExchangeCertificate -Server 'EX2010'
# then, unless the server holds the result already:
$Request = New-ExchangeCertificate -GenerateRequest -SubjectName 'C=US, S=My State, L=MyCity, O=My Organization, CN=mail.mitserv.net' -DomainName 'mail.mitserv.net','autodiscover.mitserv.net','legacy.mitserv.net' -KeySize 2048 -PrivateKeyExportable:$true -FriendlyName 'mitserv.net' -Server 'EX2010'
# only if a pending request for these names exists but its CSR is not in the journal (an earlier reply was lost), instead of a new request: its CSR is exported again:
$Request = Export-ExchangeCertificate -Thumbprint <thumbprint of the pending request> -Server 'EX2010'

# --- install-chain: Clients only trust the certificate if the server sends the CA's intermediate; Exchange builds that chain from LocalMachine\CA.
# reads first:
# in Windows PowerShell on EX2010 (Microsoft.PowerShell at http://ex2010.mitserv.net:5985/wsman), not the Exchange endpoint
Get-ChildItem -Path 'Cert:\LocalMachine\CA','Cert:\LocalMachine\Root'
# then, unless the server holds the result already:
# in Windows PowerShell on EX2010 (Microsoft.PowerShell at http://ex2010.mitserv.net:5985/wsman), not the Exchange endpoint
New-Item -Path 'C:\Certs' -ItemType 'Directory' -Force
Set-Content -Path 'C:\Certs\intermediate-a1aa37c9.cer' -Value ([Byte[]]$(Get-Content -Path 'tests/fixtures/issued/intermediate.crt' -Encoding Byte -ReadCount 0)) -Encoding 'Byte'
certutil.exe -addstore CA 'C:\Certs\intermediate-a1aa37c9.cer'
Remove-Item -Path 'C:\Certs\intermediate-a1aa37c9.cer'
# only if the stores hold the chain already: each file an interrupted attempt left is removed (Remove-Item where Test-Path finds it):
# in Windows PowerShell on EX2010 (Microsoft.PowerShell at http://ex2010.mitserv.net:5985/wsman), not the Exchange endpoint
Test-Path -Path 'C:\Certs\intermediate-a1aa37c9.cer'
Remove-Item -Path 'C:\Certs\intermediate-a1aa37c9.cer'

# --- complete: Importing the CA's answer on the server that holds the pending request joins it with its private key.
# reads first (unless this run made the request):
Get-ExchangeCertificate -Server 'EX2010'
# then, unless the server holds the result already:
$Imported = Import-ExchangeCertificate -FileData ([Byte[]]$(Get-Content -Path 'tests/fixtures/issued/mitserv.crt' -Encoding Byte -ReadCount 0)) -Server 'EX2010'
# only in the same pipeline as the import, where the server takes several statements (PSRP 2.2+) and the enable step is still to do:
Enable-ExchangeCertificate -Thumbprint '8CBBB551635404C15FA7886174E941CA24224B38' -Services 'IIS','SMTP','POP','IMAP' -Force -Server 'EX2010'

# --- enable: Bind the certificate to the services; -Force answers the SMTP overwrite prompt.
# reads first (unless this run imported the certificate):
Get-ExchangeCertificate -Server 'EX2010'
# then, unless the server holds the result already:
Enable-ExchangeCertificate -Thumbprint '8CBBB551635404C15FA7886174E941CA24224B38' -Services 'IIS','SMTP','POP','IMAP' -Force -Server 'EX2010'

# --- export: The other servers need the private key too: export it as a password-protected PFX.
# reads first (unless this run imported the certificate):
Get-ExchangeCertificate -Server 'EX2010'
# then, unless the server holds the result already:
$Export = Export-ExchangeCertificate -Thumbprint '8CBBB551635404C15FA7886174E941CA24224B38' -BinaryEncoded -Password (Get-Credential).Password -Server 'EX2010'

# --- verify: Read the certificate back and find it by thumbprint (unique, unlike the names).
# reads first:
Get-ExchangeCertificate -Server 'EX2010'

# ===== EX2007.ps1 =====
# exmig plan for EX2007 (Exchange 2007, target)
# Generated from the playbook; exmig sends these as commands with typed parameters.
# Values in <angle brackets> are not known yet; (Get-Credential).Password stands for a secret.
Add-PSSnapin -Name 'Microsoft.Exchange.Management.PowerShell.Admin'

# --- before the first change: what the run reads of this server
Get-ExchangeCertificate
Get-OwaVirtualDirectory -Server 'EX2007'
Get-WebServicesVirtualDirectory -Server 'EX2007'
Get-ActiveSyncVirtualDirectory -Server 'EX2007'
Get-OabVirtualDirectory -Server 'EX2007'
Get-ClientAccessServer -Identity 'EX2007'
Get-OutlookAnywhere -Server 'EX2007'
Get-ReceiveConnector -Server 'EX2007'
Get-POPSettings -Server 'EX2007'
Get-IMAPSettings -Server 'EX2007'

# --- install-chain: Clients only trust the certificate if the server sends the CA's intermediate; Exchange builds that chain from LocalMachine\CA.
# reads first:
Get-ChildItem -Path 'Cert:\LocalMachine\CA','Cert:\LocalMachine\Root'
# then, unless the server holds the result already:
New-Item -Path 'C:\Certs' -ItemType 'Directory' -Force
Set-Content -Path 'C:\Certs\intermediate-a1aa37c9.cer' -Value ([Byte[]]$(Get-Content -Path 'tests/fixtures/issued/intermediate.crt' -Encoding Byte -ReadCount 0)) -Encoding 'Byte'
certutil.exe -addstore CA 'C:\Certs\intermediate-a1aa37c9.cer'
Remove-Item -Path 'C:\Certs\intermediate-a1aa37c9.cer'
# only if the stores hold the chain already: each file an interrupted attempt left is removed (Remove-Item where Test-Path finds it):
Test-Path -Path 'C:\Certs\intermediate-a1aa37c9.cer'
Remove-Item -Path 'C:\Certs\intermediate-a1aa37c9.cer'

# --- copy: Exchange 2007 imports a PFX only from a file on the server itself.
# reads first:
Get-ExchangeCertificate
# then, unless the server holds the result already:
New-Item -Path 'C:\Certs' -ItemType 'Directory' -Force
Set-Content -Path 'C:\Certs\mail.mitserv.net.pfx' -Value $Export.FileData -Encoding 'Byte'

# --- import: Import the certificate with its private key from the PFX.
# reads first:
Get-ExchangeCertificate
# then, unless the server holds the result already:
$Imported = Import-ExchangeCertificate -Path 'C:\Certs\mail.mitserv.net.pfx' -Password (Get-Credential).Password
# only first, if this run has not written the PFX (a file an earlier run left carries that run's password):
New-Item -Path 'C:\Certs' -ItemType 'Directory' -Force
Set-Content -Path 'C:\Certs\mail.mitserv.net.pfx' -Value $Export.FileData -Encoding 'Byte'
# only in the same pipeline as the import, where the server takes several statements (PSRP 2.2+) and the enable step is still to do:
Enable-ExchangeCertificate -Thumbprint '8CBBB551635404C15FA7886174E941CA24224B38' -Services 'IIS','SMTP','POP','IMAP' -Force
# only if the import fails: the PFX holds the private key (Remove-Item where Test-Path finds it):
Test-Path -Path 'C:\Certs\mail.mitserv.net.pfx'
Remove-Item -Path 'C:\Certs\mail.mitserv.net.pfx'

# --- cleanup: The PFX holds the private key: it must not stay on the server's disk.
# reads first (unless this run wrote the file):
Test-Path -Path 'C:\Certs\mail.mitserv.net.pfx'
# then, unless the server holds the result already:
Remove-Item -Path 'C:\Certs\mail.mitserv.net.pfx'

# --- enable: Bind the certificate to the services; -Force answers the SMTP overwrite prompt.
# reads first (unless this run imported the certificate):
Get-ExchangeCertificate
# then, unless the server holds the result already:
Enable-ExchangeCertificate -Thumbprint '8CBBB551635404C15FA7886174E941CA24224B38' -Services 'IIS','SMTP','POP','IMAP' -Force

# --- coexistence: Exchange 2007 keeps serving its own mailboxes under legacy.mitserv.net once the primary names move to Exchange 2010.
# reads first:
Get-OwaVirtualDirectory -Server 'EX2007'
Get-WebServicesVirtualDirectory -Server 'EX2007'
Get-OabVirtualDirectory -Server 'EX2007'
Get-ActiveSyncVirtualDirectory -Server 'EX2007'
# only for each virtual directory whose ExternalUrl differs (the value before is journaled first, for exmig rollback):
Set-OwaVirtualDirectory -Identity 'EX2007\owa (Default Web Site)' -ExternalUrl 'https://legacy.mitserv.net/owa'
Set-WebServicesVirtualDirectory -Identity 'EX2007\EWS (Default Web Site)' -ExternalUrl 'https://legacy.mitserv.net/EWS/Exchange.asmx'
Set-OabVirtualDirectory -Identity 'EX2007\OAB (Default Web Site)' -ExternalUrl 'https://legacy.mitserv.net/OAB'
Set-ActiveSyncVirtualDirectory -Identity 'EX2007\Microsoft-Server-ActiveSync (Default Web Site)' -ExternalUrl 'https://legacy.mitserv.net/Microsoft-Server-ActiveSync'

# --- verify: Read the certificate back and find it by thumbprint (unique, unlike the names).
# reads first:
Get-ExchangeCertificate
