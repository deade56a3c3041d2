//go:build !grpcfailover_gcstress

package grpcfailover

const gcStress = false
