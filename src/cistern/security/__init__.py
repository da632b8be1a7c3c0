"""Transport security and admission control: TLS contexts and certificates (:mod:`.tls`, :mod:`.pki`) and
the sans-I/O login admission rules (:mod:`.admission`: pre-login connection caps, login rate limits,
lockouts, session caps)."""
