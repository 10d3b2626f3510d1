# Multi-stage build of the one static binary.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/kubehistory-apiserver ./cmd/kubehistory-apiserver

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kubehistory-apiserver /usr/local/bin/kubehistory-apiserver
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubehistory-apiserver"]
