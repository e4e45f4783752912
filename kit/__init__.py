"""The local kit of a target: its base image, app image and model, built offline (`python -m kit --target NAME`).

Apart from the plain library (harness/), which it uses: it builds with Docker, debootstrap and pip on the host,
for scripts/setup, the deployment fixtures, the repeat and fidelity tools and the self-tests. The code is in
kit/build.py; this re-exports what they call. Settings (BASE_PACKAGES, CACHE) stay in kit.build, which reads
them: patch them there, not here.
"""

from kit.build import KitError, base_tag, docker_client, ensure_base, ensure_image, ensure_kit, ensure_model, image_tag

__all__ = ["KitError", "base_tag", "docker_client", "ensure_base", "ensure_image", "ensure_kit", "ensure_model",
           "image_tag"]
