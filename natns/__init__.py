"""natns: private networks in Linux network namespaces behind a NAT gateway."""

__version__ = "0.1.0"
