#!/usr/bin/env bash
# One image per commit, and manifests that name exactly that image.
#
#   infra/docker/release.sh build REGISTRY [OUT]   build the image of HEAD, tag it
#       <12-char git sha>-ray<RAY_VERSION>-py311-gpu, push it, then `render` with its digest
#   infra/docker/release.sh render IMAGE [OUT]      write copies of the KubeRay manifests and the
#       AWS launcher config with IMAGE in place of the placeholder (IMAGE must carry a digest,
#       @sha256:..., or a tag that starts with a git sha)
#
# OUT defaults to ~/.cache/raysweep/release/<tag>. The committed files name the placeholder
# REGISTRY/raysweep:GIT_SHA-..., which no registry serves, so an unrendered file cannot start a
# cluster that runs unknown code; a tag that moves (0.1.0, latest) would let two nodes of one
# cluster run different code, since pods keep IfNotPresent and launcher nodes pull once.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PLACEHOLDER_RE='REGISTRY/raysweep:GIT_SHA-'
FILES=(infra/kuberay/raycluster.yaml infra/kuberay/rayjob.yaml infra/ray/aws.yaml)

die() { echo "release.sh: $*" >&2; exit 2; }

ray_version() { sed -n 's/^ARG RAY_VERSION=//p' "$ROOT/infra/docker/Dockerfile"; }

render() {
    local image=$1 out=${2:-}
    # A digest pins the bits; a git-sha tag at least names one commit. Anything else moves.
    if [[ $image != *@sha256:* && ! ${image##*/} =~ :[0-9a-f]{7,40}- ]]; then
        die "$image is pinned neither by digest (@sha256:...) nor by a git-sha tag; build it with 'release.sh build REGISTRY'"
    fi
    local tag=${image##*/}
    tag=${tag%%@*}
    out=${out:-$HOME/.cache/raysweep/release/${tag#*:}}
    # Every file is rendered and checked before any is written: a refusal leaves OUT as it was.
    local -a dests=() texts=()
    for f in "${FILES[@]}"; do
        grep -q "$PLACEHOLDER_RE" "$ROOT/$f" || die "$f names no placeholder image"
        # The whole placeholder (up to the end of the image word) becomes IMAGE.
        local dest="$out/$(basename "$f")" new
        new=$(sed -E "s#${PLACEHOLDER_RE}[A-Za-z0-9._-]+#${image}#g" "$ROOT/$f")
        # Never overwrite a file of someone else's: only an identical earlier render may stand.
        if [[ -e $dest ]] && ! cmp -s "$dest" <(printf '%s\n' "$new"); then
            die "$dest exists and differs; choose an empty OUT folder or move the file away"
        fi
        dests+=("$dest"); texts+=("$new")
    done
    mkdir -p "$out"
    local i
    for i in "${!dests[@]}"; do printf '%s\n' "${texts[$i]}" >"${dests[$i]}"; done
    echo "$out"
}

build() {
    local registry=${1%/} out=${2:-}
    cd "$ROOT"
    # Only a committed tree has a sha that says what is in the image.
    if [[ -n $(git status --porcelain -- raysweep search_spaces pyproject.toml README.md infra/docker) ]]; then
        die "uncommitted changes in what the image holds (git status); commit them first"
    fi
    local sha tag
    sha=$(git rev-parse HEAD)
    tag="$registry/raysweep:${sha:0:12}-ray$(ray_version)-py311-gpu"
    docker build -f infra/docker/Dockerfile --build-arg GIT_SHA="$sha" -t "$tag" .
    docker push "$tag"
    local digest
    digest=$(docker inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$tag" |
             grep -m1 "^$registry/raysweep@") || die "no digest for $tag after the push"
    render "$tag@${digest#*@}" "$out"
}

case ${1:-} in
    build) [[ $# -ge 2 ]] || die "usage: release.sh build REGISTRY [OUT]"; shift; build "$@" ;;
    render) [[ $# -ge 2 ]] || die "usage: release.sh render IMAGE [OUT]"; shift; render "$@" ;;
    *) die "usage: release.sh build REGISTRY [OUT] | render IMAGE [OUT]" ;;
esac
