package bench

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/nlbridge/bridge/nsutil"
)

// nlbCNI drives the nlbridge CNI plugin (cmd/nlbridge-cni, built by `make
// bench-peers` into $NLB_CNI_BIN/nlbridge) on the same workload as the
// reference bridge + portmap peer: one ADD with NAT and one published
// port, one DEL with the cached result, each timed from process start to
// exit. Network net is nlbc<net> on 10.(101+2*net).0.0/16, host port
// 20000+10000*net+i.
type nlbCNI struct {
	bin     string
	results map[[2]int]json.RawMessage
}

func (c *nlbCNI) conf(net, i int, prev json.RawMessage) []byte {
	m := map[string]any{"cniVersion": "1.0.0", "name": fmt.Sprint("nlbc", net), "type": "nlbridge",
		"bridge": fmt.Sprint("nlbc", net), "isGateway": true, "ipMasq": true,
		"ipam": map[string]any{"type": "host-local",
			"ranges": [][]map[string]string{{{"subnet": fmt.Sprintf("10.%d.0.0/16", 101+2*net)}}},
			"routes": []map[string]string{{"dst": "0.0.0.0/0"}}},
		"runtimeConfig": map[string]any{"portMappings": []map[string]any{
			{"hostPort": 20000 + 10000*net + i, "containerPort": 80, "protocol": "tcp"}}},
	}
	if prev != nil {
		m["prevResult"] = prev
	}
	b, _ := json.Marshal(m)
	return b
}

func (c *nlbCNI) exec(host, sb *nsutil.NS, cmd string, net, i int, prev json.RawMessage) ([]byte, error) {
	env := []string{"CNI_COMMAND=" + cmd, fmt.Sprintf("CNI_CONTAINERID=c%d-%d", net, i), "CNI_NETNS=" + sb.Path(),
		"CNI_IFNAME=eth0", "CNI_PATH=" + c.bin}
	return run(host, c.conf(net, i, prev), env, filepath.Join(c.bin, "nlbridge"))
}

func (c *nlbCNI) attach(host, sb *nsutil.NS, net, i int) error {
	res, err := c.exec(host, sb, "ADD", net, i, nil)
	c.results[[2]int{net, i}] = res
	return err
}

func (c *nlbCNI) detach(host, sb *nsutil.NS, net, i int) error {
	_, err := c.exec(host, sb, "DEL", net, i, c.results[[2]int{net, i}])
	return err
}
