# The Portcullis container image, built with no base image: everything in it
# comes from the build context that scripts/image.sh prepares from this
# repository and the build machine:
#
#   registry                       the static registry binary (CGO_ENABLED=0, -trimpath)
#   rootfs/etc/passwd, etc/group   the unprivileged user and group 65532 (portcullis)
#   rootfs/etc/ssl/certs/ca-certificates.crt   the CA bundle, for S3, remotes and webhooks
#   rootfs/tmp                     mode 1777
#   rootfs/etc/portcullis/config.yml   the default: listen on :5000, data in /data
#   data/                          empty; becomes /data, owned by 65532
#
# Build it with scripts/image.sh [TAG]; `docker build` of this file alone
# needs that context.
#
# The contract: the entrypoint is the registry binary, so
#   docker run IMAGE serve --config /etc/portcullis/config.yml --addr :5000 --data /data
# works, and that (less --addr and --data, which the configuration may set)
# is the default command. The process runs as 65532:65532 and writes only to
# /data (the metadata database, and the images on the filesystem backend)
# and /tmp, so the root filesystem may be read-only.
FROM scratch

ARG VERSION=dev
ARG REVISION=unknown

COPY rootfs/ /
COPY --chown=65532:65532 data/ /data/
COPY registry /usr/bin/registry

ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /data
VOLUME ["/data", "/tmp"]
EXPOSE 5000

LABEL org.opencontainers.image.title="Portcullis" \
      org.opencontainers.image.description="A private OCI container registry that lets only trusted images through." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

ENTRYPOINT ["/usr/bin/registry"]
CMD ["serve", "--config", "/etc/portcullis/config.yml"]
