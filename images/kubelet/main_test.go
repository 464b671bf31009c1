package main

import (
	"net/url"
	"reflect"
	"testing"
)

func TestKubeletPathsBecomeSuperSubresources(t *testing.T) {
	cases := map[string]route{
		"/containerLogs/shop/web-1/app":  {"log", "shop", "web-1", "app"},
		"/exec/shop/web-1/app":           {"exec", "shop", "web-1", "app"},
		"/exec/shop/web-1/uid-123/app":   {"exec", "shop", "web-1", "app"},
		"/attach/shop/web-1/app":         {"attach", "shop", "web-1", "app"},
		"/portForward/shop/web-1":        {"portforward", "shop", "web-1", ""},
		"/portForward/shop/web-1/uid-12": {"portforward", "shop", "web-1", ""},
	}
	for path, want := range cases {
		got, err := parseKubeletPath(path)
		if err != nil || got != want {
			t.Errorf("%s: got %+v, %v; want %+v", path, got, err, want)
		}
	}
}

func TestAnythingElseIsRefused(t *testing.T) {
	for _, path := range []string{
		"/", "/pods", "/stats/summary", "/run/shop/web/app", "/containerLogs/shop/web",
		"/exec/shop/../app", "/containerLogs/Shop/web/app", "/exec/shop,x=y/web/app",
		"/exec/shop/web/a/b/c", "//exec/shop/web/app",
	} {
		if got, err := parseKubeletPath(path); err == nil {
			t.Errorf("%s: served as %+v", path, got)
		}
	}
}

func TestOnlyEachSubresourcesParametersCross(t *testing.T) {
	in := url.Values{
		"command": {"sh", "-c", "echo hi"}, "input": {"1"}, "output": {"1"}, "error": {"0"}, "tty": {"1"},
		"follow": {"true"}, "tailLines": {"5"}, "port": {"8080"}, "insecureSkipTLSVerifyBackend": {"true"},
	}
	exec := superQuery(route{"exec", "shop", "web", "app"}, in)
	want := url.Values{"command": {"sh", "-c", "echo hi"}, "stdin": {"true"}, "stdout": {"true"}, "tty": {"true"}, "container": {"app"}}
	if !reflect.DeepEqual(exec, want) {
		t.Errorf("exec: %v", exec)
	}
	logs := superQuery(route{"log", "shop", "web", "app"}, in)
	if !reflect.DeepEqual(logs, url.Values{"follow": {"true"}, "tailLines": {"5"}, "container": {"app"}}) {
		t.Errorf("log: %v", logs)
	}
	attach := superQuery(route{"attach", "shop", "web", "app"}, in)
	if attach.Has("command") || attach.Get("stdin") != "true" {
		t.Errorf("attach: %v", attach)
	}
	pf := superQuery(route{"portforward", "shop", "web", ""}, in)
	if !reflect.DeepEqual(pf, url.Values{"ports": {"8080"}}) {
		t.Errorf("portforward: %v", pf)
	}
}
