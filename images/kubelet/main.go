// Stockade's kubelet API for one tenant's virtual node.
//
// A tenant's API server sends what it would send a kubelet -- container logs, exec, attach,
// port-forward -- to the address and port its virtual node publishes. This server answers there.
// It accepts only a client certificate signed by the tenant's CA and naming the API server's
// kubelet-client identity; it finds the super pod that mirrors the named tenant pod in the tenant's
// workloads namespace (the only namespace its super-cluster identity may read), and forwards the
// request to the super cluster's API (pods/log, pods/exec, pods/attach, pods/portforward),
// streaming, protocol upgrades (SPDY, WebSocket) included. Only allowlisted query parameters and
// headers cross; an error from the super cluster reaches the tenant as its status and a generic
// message, never with a super-cluster name in it.
//
// With --front-proxy-ca it also serves the tenant's resource-metrics API (metrics.go).
//
// Usage:
//
//	kubelet --namespace=WORKLOADS --cert=FILE --key=FILE --client-ca=FILE \
//	  [--client-name=kube-apiserver-kubelet-client] [--listen=:10250] \
//	  [--front-proxy-ca=FILE --tenant-server=URL --tenant-cert=FILE --tenant-key=FILE --node-name=NODE]
//
// The super cluster's API is found as any in-cluster client finds it (KUBERNETES_SERVICE_HOST and
// _PORT, the ServiceAccount token and CA), the token read again for every request (it rotates).
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Labels and annotations the syncer puts on every super pod it creates (stockade.naming).
type keys struct {
	namespaceLabel string // the tenant namespace, as a label (selectable)
	nameAnnotation string // the tenant pod's name
	syncedLabel    string // "true" on every object the syncer owns
}

type server struct {
	namespace  string            // the tenant's workloads namespace in the super cluster
	clientCA   *x509.Certificate // the tenant's CA, which the kubelet client's chain must end at
	clientName string            // the CN the tenant API server's kubelet-client certificate carries
	metrics    http.Handler      // metrics.k8s.io (metrics.go); nil when not configured
	super      *apiClient        // the super cluster's API, as this server's ServiceAccount (pod lists)
	keys       keys
	apiURL     *url.URL
	tokenFile  string
	transport  http.RoundTripper
}

// A kubelet path the tenant API server sends, and what it becomes in the super cluster.
type route struct {
	subresource string // log, exec, attach, portforward
	namespace   string // the tenant pod's
	pod         string
	container   string
}

var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
)

// parseKubeletPath reads /containerLogs/{ns}/{pod}/{container}, /exec|/attach/{ns}/{pod}[/{uid}]/{container}
// and /portForward/{ns}/{pod}[/{uid}]; anything else is not served.
func parseKubeletPath(path string) (route, error) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return route{}, errors.New("malformed path")
		}
	}
	if len(parts) >= 3 && (!dnsLabel.MatchString(parts[1]) || !dnsSubdomain.MatchString(parts[2])) {
		return route{}, errors.New("malformed pod name")
	}
	switch {
	case parts[0] == "containerLogs" && len(parts) == 4:
		return route{"log", parts[1], parts[2], parts[3]}, nil
	case (parts[0] == "exec" || parts[0] == "attach") && (len(parts) == 4 || len(parts) == 5):
		return route{parts[0], parts[1], parts[2], parts[len(parts)-1]}, nil
	case parts[0] == "portForward" && (len(parts) == 3 || len(parts) == 4):
		return route{"portforward", parts[1], parts[2], ""}, nil
	}
	return route{}, fmt.Errorf("not served: %s", parts[0])
}

// superQuery maps a kubelet request's query to the super cluster's pods/<subresource> options:
// only the parameters of that subresource cross, renamed where the kubelet's names differ.
func superQuery(r route, in url.Values) url.Values {
	out := url.Values{}
	copyAs := func(from, to string) {
		for _, v := range in[from] {
			out.Add(to, v)
		}
	}
	flagAs := func(from, to string) { // the kubelet's "1" is the API's "true"
		if v := in.Get(from); v == "1" || v == "true" {
			out.Set(to, "true")
		}
	}
	switch r.subresource {
	case "log":
		for _, p := range []string{"follow", "previous", "tailLines", "sinceSeconds", "sinceTime", "timestamps", "limitBytes"} {
			copyAs(p, p)
		}
	case "exec", "attach":
		if r.subresource == "exec" {
			copyAs("command", "command")
		}
		flagAs("input", "stdin")
		flagAs("output", "stdout")
		flagAs("error", "stderr")
		flagAs("tty", "tty")
	case "portforward":
		copyAs("port", "ports")
	}
	if r.container != "" {
		out.Set("container", r.container)
	}
	return out
}

// Request headers that cross: what streaming needs, nothing that could carry identity.
var forwardedHeaders = []string{
	"Accept", "Content-Type", "User-Agent", "Connection", "Upgrade", "X-Stream-Protocol-Version",
	"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions",
}

func (s *server) authorized(r *http.Request) bool {
	return r.TLS != nil && chainedTo(r.TLS.VerifiedChains, s.clientCA, s.clientName)
}

// superPod finds the super pod mirroring tenant pod namespace/name: listed in the workloads
// namespace by its tenant-namespace label, matched by its tenant-name annotation.
func (s *server) superPod(r *http.Request, namespace, name string) (string, int, error) {
	q := url.Values{"labelSelector": {fmt.Sprintf("%s=%s,%s=true", s.keys.namespaceLabel, namespace, s.keys.syncedLabel)}}
	var list struct {
		Items []listItem `json:"items"`
	}
	if _, err := s.super.do(r, http.MethodGet, fmt.Sprintf("/api/v1/namespaces/%s/pods", s.namespace), q, nil, &list); err != nil {
		return "", http.StatusBadGateway, err
	}
	for _, item := range list.Items {
		if item.Metadata.Annotations[s.keys.nameAnnotation] == name {
			return item.Metadata.Name, 0, nil
		}
	}
	return "", http.StatusNotFound, fmt.Errorf("pod %s/%s is not running on this node", namespace, name)
}

func (s *server) authorize(req *http.Request) error {
	token, err := os.ReadFile(s.tokenFile)
	if err != nil {
		return fmt.Errorf("reading the ServiceAccount token: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	return nil
}

func fail(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintln(w, message)
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		fmt.Fprintln(w, "ok")
		return
	}
	if s.metrics != nil && (r.URL.Path == "/apis" || strings.HasPrefix(r.URL.Path, "/apis/")) {
		s.metrics.ServeHTTP(w, r)
		return
	}
	if !s.authorized(r) {
		fail(w, http.StatusUnauthorized, "only the tenant API server's kubelet client may call this kubelet")
		return
	}
	rt, err := parseKubeletPath(r.URL.Path)
	if err != nil {
		fail(w, http.StatusNotFound, err.Error())
		return
	}
	pod, status, err := s.superPod(r, rt.namespace, rt.pod)
	if err != nil {
		log.Printf("%s %s: %v", r.Method, r.URL.Path, err)
		if status == http.StatusNotFound {
			fail(w, status, err.Error())
		} else {
			fail(w, status, "the pod's node is not answering; try again shortly")
		}
		return
	}
	target := *s.apiURL
	target.Path = fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/%s", s.namespace, pod, rt.subresource)
	target.RawQuery = superQuery(rt, r.URL.Query()).Encode()
	proxy := &httputil.ReverseProxy{
		Transport:     s.transport,
		FlushInterval: -1, // logs -f and streams: every write goes through at once
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = &target
			pr.Out.Host = target.Host
			pr.Out.Header = http.Header{}
			for _, h := range forwardedHeaders {
				for _, v := range pr.In.Header.Values(h) {
					pr.Out.Header.Add(h, v)
				}
			}
			if err := s.authorize(pr.Out); err != nil {
				log.Print(err)
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode < 400 {
				return nil
			}
			// The super cluster's message names super objects: the tenant gets the status only.
			log.Printf("%s %s: super cluster answered %s", r.Method, r.URL.Path, resp.Status)
			resp.Body.Close()
			body := fmt.Sprintf("%s: %s\n", rt.subresource, http.StatusText(resp.StatusCode))
			resp.Body = nopCloser{strings.NewReader(body)}
			resp.ContentLength = int64(len(body))
			resp.Header = http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			log.Printf("%s %s: %v", r.Method, r.URL.Path, err)
			fail(w, http.StatusBadGateway, "the pod's node is not answering; try again shortly")
		},
	}
	proxy.ServeHTTP(w, r)
}

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }

// transport: HTTP/1.1 (upgrades -- SPDY, WebSocket -- need it), servers checked against `roots`,
// no proxy from the environment, bounded dial and handshake.
func transport(roots *x509.CertPool, client []tls.Certificate) *http.Transport {
	return &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, Certificates: client, MinVersion: tls.VersionTLS12},
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   false,
	}
}

func superTransport(caFile string) (http.RoundTripper, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", caFile)
	}
	return transport(pool, nil), nil
}

func readCertificate(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no certificate", file)
	}
	return x509.ParseCertificate(block.Bytes)
}

// tenantClient: the tenant API server, as this server's own tenant identity (a client certificate
// of the tenant's CA), the server checked against that CA.
func tenantClient(server, caFile, certFile, keyFile string) (*apiClient, error) {
	base, err := url.Parse(server)
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return nil, fmt.Errorf("--tenant-server %q: want https://host:port", server)
	}
	ca, err := readCertificate(caFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &apiClient{base: base, transport: transport(roots, []tls.Certificate{cert})}, nil
}

func main() {
	listen := flag.String("listen", ":10250", "address to serve on")
	namespace := flag.String("namespace", "", "the tenant's workloads namespace in the super cluster")
	certFile := flag.String("cert", "", "serving certificate (signed by the tenant's CA)")
	keyFile := flag.String("key", "", "its key")
	clientCA := flag.String("client-ca", "", "the tenant's CA: client certificates must chain to it")
	clientName := flag.String("client-name", "kube-apiserver-kubelet-client", "the one client identity (CN) served")
	namespaceLabel := flag.String("namespace-label", "stockade.dev/tenant-namespace", "super pods' tenant-namespace label")
	nameAnnotation := flag.String("name-annotation", "stockade.dev/tenant-name", "super pods' tenant-name annotation")
	syncedLabel := flag.String("synced-label", "stockade.dev/synced", "label on every object the syncer owns")
	saDir := flag.String("service-account-dir", serviceAccountDir, "the ServiceAccount's token and CA")
	frontProxyCA := flag.String("front-proxy-ca", "", "the tenant's front-proxy CA: serve metrics.k8s.io to its client")
	frontProxyName := flag.String("front-proxy-name", "front-proxy-client", "the front-proxy client's CN")
	tenantServer := flag.String("tenant-server", "", "the tenant API server's URL (SubjectAccessReviews, pod lists)")
	tenantCert := flag.String("tenant-cert", "", "this server's client certificate in the tenant")
	tenantKey := flag.String("tenant-key", "", "its key")
	nodeName := flag.String("node-name", "", "the virtual node's name (its NodeMetrics)")
	flag.Parse()
	if *namespace == "" || *certFile == "" || *keyFile == "" || *clientCA == "" {
		log.Fatal("--namespace, --cert, --key and --client-ca are required")
	}
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		log.Fatal("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: run me in a pod")
	}
	toSuper, err := superTransport(*saDir + "/ca.crt")
	if err != nil {
		log.Fatalf("super cluster CA: %v", err)
	}
	ca, err := readCertificate(*clientCA)
	if err != nil {
		log.Fatalf("client CA: %v", err)
	}
	clients := x509.NewCertPool()
	clients.AddCert(ca)
	s := &server{
		namespace:  *namespace,
		clientCA:   ca,
		clientName: *clientName,
		keys:       keys{*namespaceLabel, *nameAnnotation, *syncedLabel},
		apiURL:     &url.URL{Scheme: "https", Host: net.JoinHostPort(host, port)},
		tokenFile:  *saDir + "/token",
		transport:  toSuper,
	}
	s.super = &apiClient{base: s.apiURL, transport: toSuper, sign: s.authorize}
	if *frontProxyCA != "" {
		proxyCA, err := readCertificate(*frontProxyCA)
		if err != nil {
			log.Fatalf("front-proxy CA: %v", err)
		}
		clients.AddCert(proxyCA)
		tenant, err := tenantClient(*tenantServer, *clientCA, *tenantCert, *tenantKey)
		if err != nil {
			log.Fatalf("tenant API server: %v", err)
		}
		if *nodeName == "" {
			log.Fatal("--node-name is required with --front-proxy-ca")
		}
		s.metrics = &metricsAPI{
			super:          s.super,
			tenant:         tenant,
			workloads:      *namespace,
			keys:           s.keys,
			node:           *nodeName,
			frontProxyCA:   proxyCA,
			frontProxyName: *frontProxyName,
		}
	}
	srv := &http.Server{
		Addr:              *listen,
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			ClientCAs:  clients,
			ClientAuth: tls.VerifyClientCertIfGiven, // /healthz answers probes; everything else checks
		},
	}
	log.Printf("kubelet API for namespace %s on %s", *namespace, *listen)
	log.Fatal(srv.ListenAndServeTLS(*certFile, *keyFile))
}
