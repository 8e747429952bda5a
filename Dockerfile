# Multi-stage build: a release binary on a small Debian base, run as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml names the benches: their sources must be present for the manifest to load.
COPY benches ./benches
RUN cargo build --release --locked --bin bearerd && strip target/release/bearerd

FROM debian:bookworm-slim
# ca-certificates tracks Debian's security updates: not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 bearerd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/bearerd --create-home bearerd
COPY --from=build /src/target/release/bearerd /usr/local/bin/bearerd
# Mount your configuration (bearerd.yaml and app folders) here; the example is the default.
COPY config /etc/bearerd
# Tokens live outside the (possibly read-only) config mount.
ENV BEARERD_STORE_FILE=/var/lib/bearerd/tokens.json
# Every subcommand's --config default.
ENV BEARERD_CONFIG=/etc/bearerd/bearerd.yaml
# Token state on a volume, so a restart keeps the refresh tokens.
VOLUME /var/lib/bearerd
# Numeric, so that runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/bearerd
EXPOSE 10080 10001
# GET /readyz on the admin listener, without curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["bearerd", "healthcheck"]
ENTRYPOINT ["bearerd"]
CMD ["run"]
