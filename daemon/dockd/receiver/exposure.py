"""Who may reach `dockd serve`, decided before it binds: no anonymous or clear-text server by
accident.

* Without an authentication method (`--tokens` and/or `--client-ca`) the server starts only with
  `--allow-anonymous`, and only on a loopback address (the demo, a test, a dock on the same PC).
* On a non-loopback address without TLS it starts only with `--allow-plaintext` (e.g. behind a
  TLS-terminating reverse proxy on the same host), and says so in a warning at every start.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockd.loopback import is_loopback


class ExposureError(ValueError):
    """The server would be reachable in a way nobody asked for explicitly (exit 78)."""


@dataclass(frozen=True)
class Exposure:
    host: str
    tls: bool
    tokens: bool
    client_certs: bool
    allow_anonymous: bool = False
    allow_plaintext: bool = False

    @property
    def authenticated(self) -> bool:
        return self.tokens or self.client_certs


def check(exposure: Exposure) -> list[str]:
    """Raise ExposureError for a refused combination; return the warnings to log at start."""
    where = exposure.host or "all interfaces"
    loopback = is_loopback(exposure.host)
    if not exposure.authenticated:
        if not exposure.allow_anonymous:
            raise ExposureError(
                "no authentication configured: give --tokens FILE and/or --client-ca PEM "
                "(--allow-anonymous is accepted on a loopback address only)"
            )
        if not loopback:
            raise ExposureError(
                f"--allow-anonymous is refused on {where}: anonymous uploads are allowed on a "
                "loopback address only; give --tokens FILE and/or --client-ca PEM"
            )
    warnings = []
    if not exposure.tls and not loopback:
        if not exposure.allow_plaintext:
            raise ExposureError(
                f"listening on {where} without TLS would carry tokens, upload URLs and evidence "
                "metadata in clear: give --tls-cert (or --allow-plaintext behind a TLS-terminating "
                "reverse proxy)"
            )
        warnings.append(
            f"serving plain HTTP on {where} (--allow-plaintext): tokens, upload URLs and "
            "metadata travel in clear unless a TLS-terminating proxy is the only way in"
        )
    if exposure.allow_anonymous and exposure.authenticated:
        warnings.append("--allow-anonymous has no effect: authentication is configured")
    return warnings
