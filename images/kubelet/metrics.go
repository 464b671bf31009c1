// The resource-metrics API (metrics.k8s.io/v1beta1) of the tenant: what `kubectl top` and the
// tenant's HorizontalPodAutoscalers read.
//
// The tenant API server's aggregation layer forwards these requests here (its APIService
// v1beta1.metrics.k8s.io names kube-system/stockade-kubelet, the virtual node's address). They
// arrive with the front-proxy client certificate (the tenant's front-proxy CA) and the requesting
// user in X-Remote-* headers. Each request is authorized by the tenant API server
// (SubjectAccessReview), the tenant pods it may see are listed there (so label and field selectors
// mean what they mean in the tenant), and their usage is read from the super cluster's
// metrics.k8s.io in the tenant's workloads namespace: the only metrics this server's super-cluster
// identity may read. The virtual node's usage is the sum of its pods'.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

const (
	metricsGroup   = "metrics.k8s.io"
	metricsVersion = "v1beta1"
	metricsPrefix  = "/apis/" + metricsGroup + "/" + metricsVersion
)

// The user the tenant API server vouches for (its front proxy's X-Remote-* headers).
type userInfo struct {
	Username string              `json:"user"`
	Groups   []string            `json:"groups,omitempty"`
	Extra    map[string][]string `json:"extra,omitempty"`
}

// What a metrics request asks for.
type metricsRequest struct {
	resource  string // pods or nodes
	namespace string // pods only; "" is every namespace
	name      string // "" lists
}

func (q metricsRequest) verb() string {
	if q.name == "" {
		return "list"
	}
	return "get"
}

// parseMetricsPath reads /apis/metrics.k8s.io/v1beta1/{pods,nodes}[/{name}] and
// .../namespaces/{ns}/pods[/{name}].
func parseMetricsPath(path string) (metricsRequest, error) {
	rest, ok := strings.CutPrefix(path, metricsPrefix+"/")
	if !ok {
		return metricsRequest{}, errors.New("not served")
	}
	parts := strings.Split(rest, "/")
	for _, p := range parts {
		if !dnsSubdomain.MatchString(p) {
			return metricsRequest{}, errors.New("malformed path")
		}
	}
	q := metricsRequest{}
	if parts[0] == "namespaces" && len(parts) >= 3 {
		if !dnsLabel.MatchString(parts[1]) {
			return metricsRequest{}, errors.New("malformed namespace")
		}
		q.namespace, parts = parts[1], parts[2:]
		if parts[0] != "pods" {
			return metricsRequest{}, errors.New("not served")
		}
	}
	if len(parts) > 2 || (parts[0] != "pods" && parts[0] != "nodes") {
		return metricsRequest{}, errors.New("not served")
	}
	q.resource = parts[0]
	if len(parts) == 2 {
		q.name = parts[1]
	}
	return q, nil
}

// frontProxyUser is the user of a request the tenant API server forwarded, if it is one: the
// client certificate chains to the front-proxy CA (not merely to any CA this server trusts) and
// names the front-proxy client.
func frontProxyUser(state *tls.ConnectionState, ca *x509.Certificate, clientName string, h http.Header) (userInfo, bool) {
	if state == nil || !chainedTo(state.VerifiedChains, ca, clientName) {
		return userInfo{}, false
	}
	u := userInfo{Username: h.Get("X-Remote-User"), Groups: h.Values("X-Remote-Group")}
	if u.Username == "" {
		return userInfo{}, false
	}
	for key, values := range h {
		if name, ok := strings.CutPrefix(key, "X-Remote-Extra-"); ok {
			if unescaped, err := url.PathUnescape(name); err == nil {
				if u.Extra == nil {
					u.Extra = map[string][]string{}
				}
				u.Extra[strings.ToLower(unescaped)] = values
			}
		}
	}
	return u, true
}

// chainedTo: one of the verified chains ends at `ca` and starts at a certificate named `cn`.
func chainedTo(chains [][]*x509.Certificate, ca *x509.Certificate, cn string) bool {
	for _, chain := range chains {
		if len(chain) > 0 && chain[len(chain)-1].Equal(ca) && chain[0].Subject.CommonName == cn {
			return true
		}
	}
	return false
}

// A client of one API server: a base URL, a transport and how requests are signed.
type apiClient struct {
	base      *url.URL
	transport http.RoundTripper
	sign      func(*http.Request) error
}

func (c *apiClient) do(r *http.Request, method, path string, query url.Values, body, into any) (int, error) {
	u := *c.base
	u.Path, u.RawQuery = path, query.Encode()
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, u.String(), reader)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.sign != nil {
		if err := c.sign(req); err != nil {
			return 0, err
		}
	}
	resp, err := c.transport.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(into)
}

type objectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type containerMetrics struct {
	Name  string            `json:"name"`
	Usage map[string]string `json:"usage"`
}

type podMetrics struct {
	Kind       string             `json:"kind"`
	APIVersion string             `json:"apiVersion"`
	Metadata   objectMeta         `json:"metadata"`
	Timestamp  string             `json:"timestamp"`
	Window     string             `json:"window"`
	Containers []containerMetrics `json:"containers"`
}

type listItem struct {
	Metadata objectMeta `json:"metadata"`
}

type metricsAPI struct {
	super          *apiClient // the super cluster's API, as this server's ServiceAccount
	tenant         *apiClient // the tenant's API server, as this server's tenant identity
	workloads      string     // the tenant's workloads namespace in the super cluster
	keys           keys
	node           string // the virtual node's name
	frontProxyCA   *x509.Certificate
	frontProxyName string
}

// Status is the API's error body, as `kubectl` prints it.
func status(w http.ResponseWriter, code int, reason, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code,
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

var resources = []map[string]any{
	{"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": []string{"get", "list"}},
	{"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": []string{"get", "list"}},
}

func (m *metricsAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, ok := frontProxyUser(r.TLS, m.frontProxyCA, m.frontProxyName, r.Header)
	if !ok {
		status(w, http.StatusUnauthorized, "Unauthorized", "only the tenant API server's front proxy may call this API")
		return
	}
	if r.Method != http.MethodGet {
		status(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "metrics are read-only")
		return
	}
	groupVersion := map[string]string{"groupVersion": metricsGroup + "/" + metricsVersion, "version": metricsVersion}
	switch r.URL.Path {
	case "/apis", "/apis/":
		writeJSON(w, map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": []any{
			map[string]any{"name": metricsGroup, "versions": []any{groupVersion}, "preferredVersion": groupVersion},
		}})
		return
	case "/apis/" + metricsGroup, "/apis/" + metricsGroup + "/":
		writeJSON(w, map[string]any{"kind": "APIGroup", "apiVersion": "v1", "name": metricsGroup,
			"versions": []any{groupVersion}, "preferredVersion": groupVersion})
		return
	case metricsPrefix, metricsPrefix + "/":
		writeJSON(w, map[string]any{"kind": "APIResourceList", "apiVersion": "v1",
			"groupVersion": metricsGroup + "/" + metricsVersion, "resources": resources})
		return
	}
	q, err := parseMetricsPath(r.URL.Path)
	if err != nil {
		status(w, http.StatusNotFound, "NotFound", fmt.Sprintf("%s: %v", r.URL.Path, err))
		return
	}
	if code, err := m.allowed(r, user, q); err != nil {
		log.Printf("metrics %s %s as %q: %v", q.verb(), r.URL.Path, user.Username, err)
		if code == http.StatusForbidden {
			status(w, code, "Forbidden", err.Error())
		} else {
			status(w, http.StatusServiceUnavailable, "ServiceUnavailable", "cannot authorize the request now; try again shortly")
		}
		return
	}
	items, err := m.podMetrics(r, q)
	if err != nil {
		log.Printf("metrics %s: %v", r.URL.Path, err)
		status(w, http.StatusServiceUnavailable, "ServiceUnavailable", "metrics are not available yet; try again shortly")
		return
	}
	if q.resource == "nodes" {
		m.serveNodes(w, q, items)
		return
	}
	if q.name != "" {
		if len(items) == 0 {
			status(w, http.StatusNotFound, "NotFound", fmt.Sprintf("podmetrics.metrics.k8s.io %q not found", q.name))
			return
		}
		writeJSON(w, items[0])
		return
	}
	writeJSON(w, map[string]any{"kind": "PodMetricsList", "apiVersion": metricsGroup + "/" + metricsVersion,
		"metadata": map[string]any{}, "items": items})
}

// allowed asks the tenant API server whether the user may read these metrics.
func (m *metricsAPI) allowed(r *http.Request, user userInfo, q metricsRequest) (int, error) {
	review := map[string]any{
		"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
		"spec": map[string]any{
			"user": user.Username, "groups": user.Groups, "extra": user.Extra,
			"resourceAttributes": map[string]string{
				"group": metricsGroup, "version": metricsVersion, "resource": q.resource,
				"verb": q.verb(), "namespace": q.namespace, "name": q.name,
			},
		},
	}
	var answer struct {
		Status struct {
			Allowed bool `json:"allowed"`
		} `json:"status"`
	}
	if code, err := m.tenant.do(r, http.MethodPost, "/apis/authorization.k8s.io/v1/subjectaccessreviews", nil, review, &answer); err != nil {
		return code, err
	}
	if !answer.Status.Allowed {
		where := ""
		if q.namespace != "" {
			where = fmt.Sprintf(" in the namespace %q", q.namespace)
		}
		return http.StatusForbidden, fmt.Errorf("%s.%s is forbidden: User %q cannot %s resource %q in API group %q%s",
			q.resource, metricsGroup, user.Username, q.verb(), q.resource, metricsGroup, where)
	}
	return http.StatusOK, nil
}

// podMetrics: the tenant pods the request selects (listed in the tenant, selectors applied there),
// each with its usage from the super cluster; pods without figures yet are left out.
func (m *metricsAPI) podMetrics(r *http.Request, q metricsRequest) ([]podMetrics, error) {
	var tenantPods struct {
		Items []listItem `json:"items"`
	}
	query := url.Values{}
	if q.resource == "pods" {
		for _, p := range []string{"labelSelector", "fieldSelector"} {
			if v := r.URL.Query().Get(p); v != "" {
				query.Set(p, v)
			}
		}
		if q.name != "" {
			query.Set("fieldSelector", strings.Trim(query.Get("fieldSelector")+",metadata.name="+q.name, ","))
		}
	}
	path := "/api/v1/pods"
	if q.namespace != "" {
		path = fmt.Sprintf("/api/v1/namespaces/%s/pods", q.namespace)
	}
	if code, err := m.tenant.do(r, http.MethodGet, path, query, nil, &tenantPods); err != nil {
		if code == http.StatusBadRequest { // a malformed selector: the tenant's words, not ours
			return nil, nil
		}
		return nil, err
	}
	selector := fmt.Sprintf("%s=true", m.keys.syncedLabel)
	if q.namespace != "" {
		selector += fmt.Sprintf(",%s=%s", m.keys.namespaceLabel, q.namespace)
	}
	var superPods struct {
		Items []listItem `json:"items"`
	}
	sel := url.Values{"labelSelector": {selector}}
	if _, err := m.super.do(r, http.MethodGet, fmt.Sprintf("/api/v1/namespaces/%s/pods", m.workloads), sel, nil, &superPods); err != nil {
		return nil, err
	}
	var superMetrics struct {
		Items []podMetrics `json:"items"`
	}
	metricsPath := fmt.Sprintf("%s/namespaces/%s/pods", metricsPrefix, m.workloads)
	if _, err := m.super.do(r, http.MethodGet, metricsPath, sel, nil, &superMetrics); err != nil {
		return nil, err
	}
	return joinMetrics(tenantPods.Items, superPods.Items, superMetrics.Items, m.keys), nil
}

// joinMetrics pairs each tenant pod with the super pod that mirrors it (its tenant-namespace label
// and tenant-name annotation) and that pod's metrics, under the tenant's names and labels.
func joinMetrics(tenant, super []listItem, metrics []podMetrics, k keys) []podMetrics {
	byTenantName := map[string]string{} // "ns/name" -> super pod name
	for _, p := range super {
		md := p.Metadata
		byTenantName[md.Labels[k.namespaceLabel]+"/"+md.Annotations[k.nameAnnotation]] = md.Name
	}
	bySuperName := map[string]podMetrics{}
	for _, pm := range metrics {
		bySuperName[pm.Metadata.Name] = pm
	}
	out := []podMetrics{}
	for _, p := range tenant {
		md := p.Metadata
		pm, ok := bySuperName[byTenantName[md.Namespace+"/"+md.Name]]
		if !ok {
			continue
		}
		out = append(out, podMetrics{
			Kind: "PodMetrics", APIVersion: metricsGroup + "/" + metricsVersion,
			Metadata:  objectMeta{Name: md.Name, Namespace: md.Namespace, Labels: md.Labels},
			Timestamp: pm.Timestamp, Window: pm.Window, Containers: pm.Containers,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Metadata, out[j].Metadata
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	return out
}

// serveNodes answers for the one virtual node: its usage is the sum of its pods'.
func (m *metricsAPI) serveNodes(w http.ResponseWriter, q metricsRequest, pods []podMetrics) {
	if q.name != "" && q.name != m.node {
		status(w, http.StatusNotFound, "NotFound", fmt.Sprintf("nodemetrics.metrics.k8s.io %q not found", q.name))
		return
	}
	node, err := nodeMetrics(m.node, pods, time.Now())
	if err != nil {
		log.Printf("metrics of node %s: %v", m.node, err)
		status(w, http.StatusServiceUnavailable, "ServiceUnavailable", "metrics are not available yet; try again shortly")
		return
	}
	if q.name != "" {
		writeJSON(w, node)
		return
	}
	writeJSON(w, map[string]any{"kind": "NodeMetricsList", "apiVersion": metricsGroup + "/" + metricsVersion,
		"metadata": map[string]any{}, "items": []any{node}})
}

func nodeMetrics(name string, pods []podMetrics, now time.Time) (map[string]any, error) {
	var cpuNano, memoryBytes int64
	timestamp, window := now.UTC().Format(time.RFC3339), "0s"
	for _, p := range pods {
		for _, c := range p.Containers {
			cpu, err := parseQuantity(c.Usage["cpu"], 1e9)
			if err != nil {
				return nil, fmt.Errorf("pod %s/%s: cpu %q: %w", p.Metadata.Namespace, p.Metadata.Name, c.Usage["cpu"], err)
			}
			memory, err := parseQuantity(c.Usage["memory"], 1)
			if err != nil {
				return nil, fmt.Errorf("pod %s/%s: memory %q: %w", p.Metadata.Namespace, p.Metadata.Name, c.Usage["memory"], err)
			}
			cpuNano, memoryBytes = cpuNano+cpu, memoryBytes+memory
		}
		timestamp, window = p.Timestamp, p.Window
	}
	return map[string]any{
		"kind": "NodeMetrics", "apiVersion": metricsGroup + "/" + metricsVersion,
		"metadata": map[string]any{"name": name}, "timestamp": timestamp, "window": window,
		"usage": map[string]string{"cpu": fmt.Sprintf("%dn", cpuNano), "memory": fmt.Sprintf("%d", memoryBytes)},
	}, nil
}

// parseQuantity reads the quantities metrics-server writes (cpu "12345n", "3m", "1"; memory
// "1234Ki", "5Mi", "1024") as an integer count of units, where `scale` units make one whole.
func parseQuantity(s string, scale int64) (int64, error) {
	if s == "" {
		return 0, nil
	}
	suffixes := []struct {
		suffix string
		num    int64
		den    int64
	}{
		{"Ki", 1 << 10, 1}, {"Mi", 1 << 20, 1}, {"Gi", 1 << 30, 1}, {"Ti", 1 << 40, 1},
		{"n", 1, 1e9}, {"u", 1, 1e6}, {"m", 1, 1e3}, {"k", 1e3, 1}, {"M", 1e6, 1}, {"G", 1e9, 1},
	}
	num, den, digits := int64(1), int64(1), s
	for _, sf := range suffixes {
		if d, ok := strings.CutSuffix(s, sf.suffix); ok {
			num, den, digits = sf.num, sf.den, d
			break
		}
	}
	var v int64
	if _, err := fmt.Sscanf(digits, "%d", &v); err != nil || fmt.Sprint(v) != digits {
		return 0, errors.New("not a quantity")
	}
	if scale%den == 0 {
		return v * num * (scale / den), nil
	}
	return v * num * scale / den, nil
}
