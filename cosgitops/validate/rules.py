"""The catalog of validation rules: stable ids, what they check, how to fix.

Rule ids appear in every diagnostic, in SARIF rule metadata and in the docs; they never
change meaning once released.
"""

from __future__ import annotations

from typing import NamedTuple

from cosgitops.validate.diagnostics import Severity


class Rule(NamedTuple):
    id: str
    severity: Severity  # the usual severity (a few rules report both)
    summary: str
    help: str


_RULES = (
    # --- reading YAML
    Rule(
        "yaml-syntax",
        "error",
        "The file is not valid YAML.",
        "Fix the syntax at the position shown: indent with spaces, close quotes and "
        "brackets, define anchors before their aliases.",
    ),
    Rule("yaml-encoding", "error", "The file is not UTF-8 text.", "Save the file as UTF-8."),
    Rule(
        "yaml-binary",
        "error",
        "The file holds binary data.",
        "Only text files can be YAML sources.",
    ),
    Rule(
        "yaml-too-large",
        "error",
        "The file is over the size or node limit.",
        "Split the file; limits bound the memory and time validation may take.",
    ),
    Rule("yaml-depth", "error", "The YAML nests deeper than the limit.", "Flatten the structure."),
    Rule(
        "yaml-alias-budget",
        "error",
        "Aliases expand beyond the budget (a YAML bomb) or form a cycle.",
        "Write values out instead of nesting aliases of aliases.",
    ),
    Rule(
        "yaml-duplicate-key",
        "error",
        "A mapping has the same key twice.",
        "Remove one of them: YAML readers disagree on which one wins, and yip refuses the file.",
    ),
    Rule(
        "yaml-multiple-documents",
        "error",
        "The file holds several YAML documents where one is expected.",
        "Remove the '---' separator and what follows, or split the file.",
    ),
    Rule(
        "yaml-empty",
        "error",
        "The file holds no YAML document.",
        "Write the document, or delete the file.",
    ),
    Rule(
        "yaml-tag",
        "error",
        "A YAML tag is not supported or does not fit its value.",
        "Remove the tag: only plain values are read.",
    ),
    Rule("yaml-complex-key", "error", "A mapping key is a collection.", "Use a string key."),
    Rule(
        "yaml-implicit-type",
        "error",
        "YAML 1.1 reads an unquoted value as a number, boolean or null where a string is "
        "meant (1.10 is 1.1, no is false, 0755 is 493).",
        "Quote the value.",
    ),
    Rule(
        "file-unreadable",
        "error",
        "A file cannot be read as a source (missing, not a regular file, permission denied).",
        "Make it a readable regular file within the size limit.",
    ),
    # --- schemas
    Rule(
        "schema",
        "error",
        "The file does not match its JSON Schema.",
        "Follow the message: the schema in schemas/ documents every key.",
    ),
    Rule(
        "name-format",
        "error",
        "A name is not a DNS label.",
        "Use lowercase letters, digits and '-', at most 63 characters.",
    ),
    Rule(
        "version-semver",
        "error",
        "spec.version is not a SemVer 2.0 version.",
        "Write MAJOR.MINOR.PATCH, e.g. 1.4.0, quoted if YAML could read it as a number.",
    ),
    Rule(
        "upgrade-range",
        "error",
        "release.upgradeFrom is not a version range.",
        "Write comparators such as '>=1.2.0' or '>=1.2.0 <2.0.0'.",
    ),
    Rule(
        "base-reference",
        "error",
        "spec.base is not an image reference.",
        "Write REGISTRY/REPO:TAG@sha256:DIGEST, oci:PATH[:TAG][@DIGEST] or scratch.",
    ),
    Rule(
        "registry-reference",
        "error",
        "spec.registry is not a registry repository prefix.",
        "Write HOST/PATH (no tag or digest) or oci:PATH.",
    ),
    # --- semantic rules
    Rule(
        "name-matches-folder",
        "error",
        "metadata.name differs from the derivative's folder name.",
        "Rename the folder or the derivative so they agree.",
    ),
    Rule(
        "name-unique",
        "error",
        "Two derivatives have the same name.",
        "Give each derivative its own name.",
    ),
    Rule(
        "version-bump",
        "error",
        "A derivative changed since the reference without a greater version, or its "
        "version went down.",
        "Raise spec.version whenever anything in the derivative's folder changes.",
    ),
    Rule(
        "base-unpinned",
        "warning",
        "spec.base is not pinned by digest; release refuses to build it.",
        "Append @sha256:<digest> of the base image (skopeo inspect or crane digest prints it).",
    ),
    Rule(
        "base-scratch-commands",
        "error",
        "packages or run need a base image with a shell; scratch has none.",
        "Use a real base image, or drop packages and run.",
    ),
    Rule(
        "path-escape",
        "error",
        "A path leaves its folder: '..', an absolute path, or a symlink pointing out of "
        "the repository.",
        "Keep every referenced path inside the derivative folder; replace symlinks by the "
        "real files.",
    ),
    Rule(
        "private-key",
        "error",
        "A private key is in the validated tree (an empty placeholder block is a warning).",
        "Remove it from the repository (and rotate it: it was exposed); keep keys in a "
        "secret store or env:// variables.",
    ),
    Rule(
        "channel-undeclared",
        "error",
        "A derivative releases to a channel cosgitops.yaml does not declare.",
        "Declare the channel under spec.channels in cosgitops.yaml, or use a declared one.",
    ),
    Rule(
        "os-release-reserved",
        "warning",
        "osRelease sets a variable that cosgitops sets itself.",
        "Remove it: IMAGE_REPO, IMAGE_TAG, IMAGE and TIMESTAMP are written at build time.",
    ),
    Rule(
        "derivative-missing",
        "error",
        "A folder under derivatives/ has no derivative.yaml.",
        "Add derivative.yaml or remove the folder.",
    ),
    Rule(
        "unknown-kind",
        "warning",
        "cosgitops cannot tell what kind of file this is.",
        "Pass --as derivative|repository|cloud-config.",
    ),
    # --- yip cloud-config
    Rule(
        "yip-unknown-key",
        "warning",
        "A cloud-config key is unknown to yip, which ignores it silently.",
        "Fix the spelling (see the hint) or remove the key.",
    ),
    Rule(
        "yip-cloud-init-key",
        "warning",
        "A cloud-init key in a yip file without #cloud-config is ignored.",
        "Add #cloud-config as the first line, or move it into a stage step.",
    ),
    Rule(
        "yip-permissions",
        "warning",
        "A file mode is not an octal number with a leading zero.",
        "Write permissions: 0644 (unquoted, leading zero).",
    ),
    Rule(
        "yip-plaintext-password",
        "warning",
        "A user's password is plain text.",
        "Use a crypt(3) hash such as mkpasswd -m sha-512 prints ($6$...).",
    ),
    Rule(
        "yip-stage-name",
        "warning",
        "A stage name looks like a misspelt yip stage.",
        "Use the stage name yip runs (see the hint).",
    ),
)

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}


def rule(rule_id: str) -> Rule:
    return RULES.get(rule_id) or Rule(rule_id, "error", rule_id, "")
