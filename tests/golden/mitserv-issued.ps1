# ===== EX2010.ps1 =====
# exmig plan for EX2010 (Exchange 2010, source)
# Generated from the playbook; exmig sends these as commands with typed parameters.
# Values in <angle brackets> are not known yet; (Get-Credential).Password stands for a secret.

# --- request: The key is generated on the source and never leaves it until the PFX export; it must be exportable so the certificate can go to the other servers.
$Request = New-ExchangeCertificate -GenerateRequest -SubjectName 'C=US, S=My State, L=MyCity, O=My Organization, CN=mail.mitserv.net' -DomainName 'mail.mitserv.net','autodiscover.mitserv.net','legacy.mitserv.net' -KeySize 2048 -PrivateKeyExportable:$true -FriendlyName 'mitserv.net' -Server 'EX2010'

# --- install-chain: Clients only trust the certificate if the server sends the CA's intermediate; Exchange builds that chain from LocalMachine\CA.
# in Windows PowerShell on EX2010 (Microsoft.PowerShell at http://ex2010.mitserv.net:5985/wsman), not the Exchange endpoint
New-Item -Path 'C:\Certs' -ItemType 'Directory' -Force
Set-Content -Path 'C:\Certs\intermediate-a1aa37c9.cer' -Value ([Byte[]]$(Get-Content -Path 'tests/fixtures/issued/intermediate.crt' -Encoding Byte -ReadCount 0)) -Encoding 'Byte'
certutil.exe -addstore CA 'C:\Certs\intermediate-a1aa37c9.cer'
Remove-Item -Path 'C:\Certs\intermediate-a1aa37c9.cer'

# --- complete: Importing the CA's answer on the server that holds the pending request joins it with its private key.
$Imported = Import-ExchangeCertificate -FileData ([Byte[]]$(Get-Content -Path 'tests/fixtures/issued/mitserv.crt' -Encoding Byte -ReadCount 0)) -Server 'EX2010'

# --- enable: Bind the certificate to the services; -Force answers the SMTP overwrite prompt.
Enable-ExchangeCertificate -Thumbprint '8CBBB551635404C15FA7886174E941CA24224B38' -Services 'IIS','SMTP','POP','IMAP' -Force -Server 'EX2010'

# --- export: The other servers need the private key too: export it as a password-protected PFX.
$Export = Export-ExchangeCertificate -Thumbprint '8CBBB551635404C15FA7886174E941CA24224B38' -BinaryEncoded -Password (Get-Credential).Password -Server 'EX2010'

# --- verify: Read the certificate back by thumbprint (unique, unlike the names).
Get-ExchangeCertificate -Thumbprint '8CBBB551635404C15FA7886174E941CA24224B38' -Server 'EX2010'

# ===== EX2007.ps1 =====
# exmig plan for EX2007 (Exchange 2007, target)
# Generated from the playbook; exmig sends these as commands with typed parameters.
# Values in <angle brackets> are not known yet; (Get-Credential).Password stands for a secret.
Add-PSSnapin -Name 'Microsoft.Exchange.Management.PowerShell.Admin'

# --- install-chain: Clients only trust the certificate if the server sends the CA's intermediate; Exchange builds that chain from LocalMachine\CA.
New-Item -Path 'C:\Certs' -ItemType 'Directory' -Force
Set-Content -Path 'C:\Certs\intermediate-a1aa37c9.cer' -Value ([Byte[]]$(Get-Content -Path 'tests/fixtures/issued/intermediate.crt' -Encoding Byte -ReadCount 0)) -Encoding 'Byte'
certutil.exe -addstore CA 'C:\Certs\intermediate-a1aa37c9.cer'
Remove-Item -Path 'C:\Certs\intermediate-a1aa37c9.cer'

# --- copy: Exchange 2007 imports a PFX only from a file on the server itself.
New-Item -Path 'C:\Certs' -ItemType 'Directory' -Force
Set-Content -Path 'C:\Certs\mail.mitserv.net.pfx' -Value $Export.FileData -Encoding 'Byte'

# --- import: Import the certificate with its private key from the PFX.
$Imported = Import-ExchangeCertificate -Path 'C:\Certs\mail.mitserv.net.pfx' -Password (Get-Credential).Password

# --- cleanup: The PFX holds the private key: it must not stay on the server's disk.
Remove-Item -Path 'C:\Certs\mail.mitserv.net.pfx'

# --- enable: Bind the certificate to the services; -Force answers the SMTP overwrite prompt.
Enable-ExchangeCertificate -Thumbprint '8CBBB551635404C15FA7886174E941CA24224B38' -Services 'IIS','SMTP','POP','IMAP' -Force

# --- verify: Read the certificate back by thumbprint (unique, unlike the names).
Get-ExchangeCertificate -Thumbprint '8CBBB551635404C15FA7886174E941CA24224B38'
