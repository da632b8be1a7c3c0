"""The annotated example configuration printed by ``cistern config example``. It must stay valid:
tests load it."""

EXAMPLE_TOML = """\
# cistern configuration (TOML). Every key is described in docs/config.md.
# Check a file with:  cistern config check FILE      Run it with:  cistern serve --config FILE

log_level = "info"                  # debug | info | warning | error | critical

# Default portals for targets that do not list their own. "HOST:PORT"; IPv6 as "[::1]:3260";
# port 0 picks a free port. Leave out to get 127.0.0.1:3260.
portals = ["127.0.0.1:3260"]

# CHAP for discovery sessions (SendTargets). Leave out to allow discovery without authentication.
# [discovery_auth.chap]
# username = "discovery"
# secret = "at-least-12-characters"

# ---------------------------------------------------------------------------------------------------------
# A target anyone may use: an open ACL, no authentication, a RAM disk and a file.
[[targets]]
name = "iqn.2026-11.org.example:scratch"   # iqn.YYYY-MM.reversed.domain[:anything], eui.<16 hex>, naa.<16|32 hex>
alias = "scratch disks"
open = true                                # any initiator may log in (instead of an acl list)

[[targets.luns]]
lun = 0
backend = "memory"                         # memory | file | block
size = "256M"                              # bytes, or K/M/G/T (binary: 1K = 1024)

[[targets.luns]]
lun = 1
backend = "file"
path = "scratch-lun1.img"                  # relative paths start at this file's directory
size = "1G"                                # needed to create the file; created sparse
thin = true                                # report thin provisioning and accept UNMAP
block_size = 4096                          # 512 | 4096

# ---------------------------------------------------------------------------------------------------------
# A locked-down target: named initiators only, mutual CHAP, tuned login parameters.
[[targets]]
name = "iqn.2026-11.org.example:db"
portals = ["127.0.0.1:3261", "[::1]:3261"]
tpgt = 1                                   # Target Portal Group Tag
acl = ["iqn.1993-08.org.debian:01:db-host"]

[targets.auth]
chap_algorithms = ["SHA3-256", "SHA-256", "SHA1", "MD5"]   # offered in this order (CHAP_A)

[targets.auth.chap]
username = "db-host"                       # what the initiator sends as CHAP_N
secret = "initiator-secret-1"              # 12..255 characters
mutual_username = "db-target"              # set both mutual_* for mutual CHAP
mutual_secret = "target-secret-22"         # must differ from secret

[targets.params]                           # RFC 7143 section 13 keys; leave out for defaults
max_recv_data_segment_length = 262144
max_burst_length = 1048576
first_burst_length = 65536
initial_r2t = false
immediate_data = true
header_digest = ["CRC32C", "None"]
data_digest = ["None"]

[[targets.luns]]
lun = 0
backend = "memory"
size = "64M"
read_only = false
removable = false
serial = "DB0001"                          # VPD page 0x80 unit serial number
vendor = "CISTERN"                         # INQUIRY T10 vendor (8), product (16), revision (4)
product = "db volume"
"""
