// kstatus prints what the kstatus library (sigs.k8s.io/cli-utils/pkg/kstatus) computes for each
// object of a JSON list read from stdin, as JSON lines: {"name", "status", "message"}. Stockade's
// tests feed it Tenants in every state, so the status conventions are judged by the library Flux,
// cli-utils and kpt use, not by a re-implementation.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	var objects []map[string]interface{}
	data, err := io.ReadAll(os.Stdin)
	if err == nil {
		err = utiljson.Unmarshal(data, &objects) // numbers as int64, as the API machinery reads them
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: stdin must be a JSON list of objects:", err)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	for _, obj := range objects {
		u := &unstructured.Unstructured{Object: obj}
		res, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", u.GetName(), err)
			os.Exit(1)
		}
		if err := out.Encode(result{u.GetName(), res.Status.String(), res.Message}); err != nil {
			os.Exit(1)
		}
	}
}
