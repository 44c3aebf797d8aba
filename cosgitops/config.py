"""Security-relevant limits, in one place, with safe defaults.

Every byte count, depth and time limit that protects cosgitops from hostile input is a
field here. Library functions take a ``Limits`` (defaulting to ``DEFAULT_LIMITS``) rather
than hard-coding numbers, so a caller can tighten them and tests can shrink them.
Anything that weakens security is opt-in and named ``unsafe_*``.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    # YAML sources (derivative.yaml, cosgitops.yaml, cloud-config files)
    yaml_max_bytes: int = 1 * MiB
    yaml_max_depth: int = 64
    yaml_max_alias_expansions: int = 1000
    yaml_max_nodes: int = 200_000
    # Files a derivative ships (overlay) and files scanned for private keys
    overlay_max_file_bytes: int = 512 * MiB
    scan_max_file_bytes: int = 4 * MiB
    # OCI
    manifest_max_bytes: int = 4 * MiB
    config_max_bytes: int = 8 * MiB
    signature_max_bytes: int = 1 * MiB
    boot_attestations_max: int = 64  # boot attestations of one image judged (the newest)
    key_file_max_bytes: int = 64 * KiB  # cosign key files, PEM public keys
    blob_max_bytes: int = 8 * GiB
    # TUF metadata a device downloads (python-tuf has its own per-role limits too)
    metadata_max_bytes: int = 4 * MiB
    release_manifest_max_bytes: int = 1 * MiB
    # Layer extraction on the device
    extract_max_entries: int = 1_000_000
    extract_max_total_bytes: int = 64 * GiB  # sparse files count at their full size
    extract_max_depth: int = 128  # directory levels of one entry path
    extract_max_name_bytes: int = 255  # one path component (NAME_MAX)
    extract_max_path_bytes: int = 4095  # one entry path or link target (PATH_MAX - 1)
    # Network
    http_timeout_seconds: float = 30.0
    http_retries: int = 4
    http_backoff_seconds: float = 0.5
    http_backoff_max_seconds: float = 10.0  # cap on one wait, also on a server's Retry-After
    # OCI layouts on disk and registry transfers
    oci_layout_index_max_bytes: int = 64 * MiB
    oci_layout_lock_timeout_seconds: float = 120.0
    registry_upload_chunk_bytes: int = 16 * MiB  # larger blobs are uploaded in PATCH chunks
    registry_max_pages: int = 100  # pages of a paginated tag list
    credential_helper_timeout_seconds: float = 30.0
    # Publishing the index: how long a publisher waits for another to finish, and how
    # often it starts over on the new state when the index changed under it
    publish_lock_timeout_seconds: float = 600.0
    publish_attempts: int = 5
    # Device health checks: the time limit, and how much of a check's output is kept
    health_check_timeout_seconds: float = 60.0
    health_check_output_bytes: int = 8 * KiB
    # Device agent: its config file, and how long to wait for another agent's lock
    agent_config_max_bytes: int = 256 * KiB
    device_lock_wait_seconds: float = 30.0
    # Free space the agent keeps on the device's file systems for its journal and its
    # clean-up (at most a twentieth of a small file system)
    device_reserve_bytes: int = 4 * MiB
    device_crash_reports_kept: int = 10
    # Cloud-config stages: how long one command (or if condition) of a step may run
    stage_command_timeout_seconds: float = 600.0
    # ... and the largest file content a step may write once decoded (gzip expands)
    stage_file_max_bytes: int = 64 * MiB
    # Opt-ins that weaken security. Off by default; named so nobody sets them by accident.
    unsafe_allow_plain_http_non_loopback: bool = False


DEFAULT_LIMITS = Limits()
