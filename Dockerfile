# One Dockerfile for both binaries; pick one with --build-arg COMPONENT=manager|tokenserver:
#   docker build --build-arg COMPONENT=manager     -t ghcr.io/kubeoauth/manager:dev .
#   docker build --build-arg COMPONENT=tokenserver -t ghcr.io/kubeoauth/tokenserver:dev .
# COMPONENT names a directory under cmd/.

FROM golang:1.26 AS build
ARG COMPONENT=manager
ARG TARGETOS=linux
ARG TARGETARCH=amd64
WORKDIR /src
# Dependencies first, so a source change does not download modules again.
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
RUN test -d "cmd/${COMPONENT}" || { echo "COMPONENT must name a directory under cmd/, got '${COMPONENT}'" >&2; exit 1; }
# Static: the final image has no libc.
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o /out/app "./cmd/${COMPONENT}"

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /app
USER 65532:65532
ENTRYPOINT ["/app"]
