package control

import "k8s.io/apimachinery/pkg/util/intstr"

func intOrString(v int) intstr.IntOrString { return intstr.FromInt(v) }
