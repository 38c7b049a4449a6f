// herd-kube is a multi-call binary for the local stack's Kubernetes control
// plane: the first argument (or the program name) picks the component, the
// remaining arguments are the component's own flags.
//
//	herd-kube apiserver          [flags]
//	herd-kube controller-manager [flags]
//	herd-kube scheduler          [flags]
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	_ "time/tzdata" // CronJob time zones

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var components = map[string]func() *cobra.Command{
	"apiserver":          func() *cobra.Command { return apiserver.NewAPIServerCommand() },
	"controller-manager": func() *cobra.Command { return controllermanager.NewControllerManagerCommand() },
	"scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: herd-kube apiserver|controller-manager|scheduler [flags]")
	os.Exit(2)
}

func main() {
	// Called through a link named kube-apiserver, kube-scheduler, ...
	name := strings.TrimPrefix(filepath.Base(os.Args[0]), "kube-")
	newCommand, ok := components[name]
	if !ok {
		if len(os.Args) < 2 {
			usage()
		}
		if newCommand, ok = components[strings.TrimPrefix(os.Args[1], "kube-")]; !ok {
			usage()
		}
		// The component's command parses os.Args[1:]: drop the selector.
		os.Args = append([]string{os.Args[0] + " " + os.Args[1]}, os.Args[2:]...)
	}
	os.Exit(cli.Run(newCommand()))
}
