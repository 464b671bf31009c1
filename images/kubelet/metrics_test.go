package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestMetricsPaths(t *testing.T) {
	cases := map[string]metricsRequest{
		"/apis/metrics.k8s.io/v1beta1/pods":                       {"pods", "", ""},
		"/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods":       {"pods", "shop", ""},
		"/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods/web-1": {"pods", "shop", "web-1"},
		"/apis/metrics.k8s.io/v1beta1/nodes":                      {"nodes", "", ""},
		"/apis/metrics.k8s.io/v1beta1/nodes/stockade-a":           {"nodes", "", "stockade-a"},
	}
	for path, want := range cases {
		got, err := parseMetricsPath(path)
		if err != nil || got != want {
			t.Errorf("%s: got %+v, %v; want %+v", path, got, err, want)
		}
	}
	for _, path := range []string{
		"/apis/metrics.k8s.io/v1beta1/namespaces/shop/services", "/apis/metrics.k8s.io/v1beta1/namespaces/shop",
		"/apis/metrics.k8s.io/v1beta1/pods/a/b", "/apis/metrics.k8s.io/v1beta1/namespaces/Shop/pods",
		"/apis/metrics.k8s.io/v1beta1/namespaces/../pods", "/apis/apps/v1/deployments", "/apis/metrics.k8s.io/v1/pods",
	} {
		if got, err := parseMetricsPath(path); err == nil {
			t.Errorf("%s: served as %+v", path, got)
		}
	}
}

func certificate(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: parent == nil, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if parent == nil {
		parent, parentKey = template, key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestOnlyTheFrontProxyOfItsOwnCAVouchesForAUser(t *testing.T) {
	proxyCA, proxyKey := certificate(t, "front-proxy-ca", nil, nil)
	tenantCA, tenantKey := certificate(t, "ca", nil, nil)
	proxy, _ := certificate(t, "front-proxy-client", proxyCA, proxyKey)
	// A certificate of the tenant's CA with the front proxy's name (a tenant can have its CA sign
	// one through the CSR API): it must not pass as the front proxy.
	impostor, _ := certificate(t, "front-proxy-client", tenantCA, tenantKey)
	other, _ := certificate(t, "someone", proxyCA, proxyKey)
	h := http.Header{}
	h.Set("X-Remote-User", "alice")
	h.Add("X-Remote-Group", "dev")
	h.Add("X-Remote-Group", "system:authenticated")
	h.Set("X-Remote-Extra-Scopes%2fA", "x")
	state := func(leaf, root *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf, root}}}
	}
	user, ok := frontProxyUser(state(proxy, proxyCA), proxyCA, "front-proxy-client", h)
	want := userInfo{"alice", []string{"dev", "system:authenticated"}, map[string][]string{"scopes/a": {"x"}}}
	if !ok || !reflect.DeepEqual(user, want) {
		t.Errorf("front proxy: got %+v, %v; want %+v", user, ok, want)
	}
	for name, s := range map[string]*tls.ConnectionState{
		"tenant CA": state(impostor, tenantCA), "another CN": state(other, proxyCA), "no certificate": {}, "plain": nil,
	} {
		if user, ok := frontProxyUser(s, proxyCA, "front-proxy-client", h); ok {
			t.Errorf("%s: vouched for %+v", name, user)
		}
	}
	if _, ok := frontProxyUser(state(proxy, proxyCA), proxyCA, "front-proxy-client", http.Header{}); ok {
		t.Error("no X-Remote-User: served")
	}
}

func TestTenantPodsGetTheirSuperPodsFigures(t *testing.T) {
	k := keys{"stockade.dev/tenant-namespace", "stockade.dev/tenant-name", "stockade.dev/synced"}
	tenant := []listItem{
		{objectMeta{Name: "web", Namespace: "shop", Labels: map[string]string{"app": "web"}}},
		{objectMeta{Name: "db", Namespace: "shop"}},
		{objectMeta{Name: "web", Namespace: "blog"}}, // not synced yet: no figures
	}
	super := []listItem{
		{objectMeta{Name: "web-shop-1a2b", Labels: map[string]string{k.namespaceLabel: "shop"}, Annotations: map[string]string{k.nameAnnotation: "web"}}},
		{objectMeta{Name: "db-shop-3c4d", Labels: map[string]string{k.namespaceLabel: "shop"}, Annotations: map[string]string{k.nameAnnotation: "db"}}},
		{objectMeta{Name: "other-9f9f", Labels: map[string]string{k.namespaceLabel: "blog"}, Annotations: map[string]string{k.nameAnnotation: "other"}}},
	}
	usage := []containerMetrics{{"app", map[string]string{"cpu": "5m", "memory": "10Mi"}}}
	metrics := []podMetrics{
		{Metadata: objectMeta{Name: "web-shop-1a2b", Labels: map[string]string{"stockade.dev/carried": "x"}}, Timestamp: "T", Window: "15s", Containers: usage},
		{Metadata: objectMeta{Name: "other-9f9f"}, Containers: usage},
	}
	got := joinMetrics(tenant, super, metrics, k)
	if len(got) != 1 {
		t.Fatalf("got %+v", got)
	}
	want := podMetrics{"PodMetrics", "metrics.k8s.io/v1beta1", objectMeta{Name: "web", Namespace: "shop", Labels: map[string]string{"app": "web"}}, "T", "15s", usage}
	if !reflect.DeepEqual(got[0], want) {
		t.Errorf("got %+v; want %+v", got[0], want)
	}
}

func TestTheNodeIsTheSumOfItsPods(t *testing.T) {
	pods := []podMetrics{
		{Timestamp: "T", Window: "15s", Containers: []containerMetrics{
			{"a", map[string]string{"cpu": "1500000n", "memory": "1Ki"}}, {"b", map[string]string{"cpu": "2m", "memory": "1Mi"}},
		}},
		{Timestamp: "T", Window: "15s", Containers: []containerMetrics{{"c", map[string]string{"cpu": "1", "memory": "100"}}}},
	}
	node, err := nodeMetrics("stockade-a", pods, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"cpu": "1003500000n", "memory": "1049700"}
	if !reflect.DeepEqual(node["usage"], want) || node["window"] != "15s" {
		t.Errorf("got %+v", node)
	}
	if _, err := nodeMetrics("n", []podMetrics{{Containers: []containerMetrics{{"a", map[string]string{"cpu": "1.5"}}}}}, time.Now()); err == nil {
		t.Error("a quantity it cannot read was summed")
	}
}

func TestQuantities(t *testing.T) {
	for s, want := range map[string]int64{"12345n": 12345, "3m": 3_000_000, "2": 2_000_000_000, "7u": 7000, "": 0} {
		if got, err := parseQuantity(s, 1e9); err != nil || got != want {
			t.Errorf("cpu %q: %d, %v; want %d", s, got, err, want)
		}
	}
	for s, want := range map[string]int64{"1Ki": 1024, "5Mi": 5 << 20, "1Gi": 1 << 30, "1000": 1000, "2k": 2000} {
		if got, err := parseQuantity(s, 1); err != nil || got != want {
			t.Errorf("memory %q: %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"x", "1.5", "-", "Mi", "1e3"} {
		if got, err := parseQuantity(s, 1); err == nil {
			t.Errorf("%q read as %d", s, got)
		}
	}
}
